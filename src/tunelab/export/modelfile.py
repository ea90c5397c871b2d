"""Ollama Modelfile: FROM the GGUF, a Go TEMPLATE equivalent to the chat template, stops;
and `parse_modelfile`, which reads one back (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER) for
the server's /api/create.

Ollama renders prompts with Go's text/template over `.Messages` and `.Tools`, so each
built-in family (`ChatTemplate.builtin_family()`) gets a Go equivalent of its jinja template
that also renders tools, calls and tool results in the family's tool format
(`export.ollama_template`): `ollama show` then lists the `tools` capability. BOS is left to
the GGUF's add_bos flag, exactly as llama.cpp does for the jinja template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.templates import ChatTemplate
from tunelab.errors import InvalidRequest
from tunelab.export.errors import ExportError
from tunelab.export.ollama_template import EOS as EOS_MARK, FAMILIES, go_template
from tunelab.tools.formats import BY_FAMILY as TOOL_FORMAT_BY_FAMILY

# family -> its Go template, EOS_MARK where the template's EOS text goes (mistral, default)
OLLAMA_TEMPLATES: dict[str, str] = {f: go_template(f, TOOL_FORMAT_BY_FAMILY.get(f)) for f in FAMILIES}


def ollama_template(template: ChatTemplate) -> str:
    """The Go template for a chat template's built-in family; custom jinja cannot be translated."""
    family = template.builtin_family()
    if family is None:
        raise ExportError(f"chat template '{template.name}' is custom jinja with no Ollama "
                          f"equivalent; train with one of: {', '.join(OLLAMA_TEMPLATES)}")
    return go_template(family, template.tool_format).replace(EOS_MARK, template.eos_token)


def render_modelfile(gguf_name: str, template: ChatTemplate, system: str | None = None) -> str:
    """Modelfile text: FROM, TEMPLATE, the PARAMETERs (`parameter_lines`), SYSTEM."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{ollama_template(template)}"""']
    lines += [f"PARAMETER {line}" for line in parameter_lines(template)]
    system = system if system is not None else template.system
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parameter_lines(template: ChatTemplate) -> list[str]:
    """A model's PARAMETERs as `name value` lines, as `parse_modelfile` reads them back: one stop
    per stop string, then its sampling defaults (`template.options`, set by a Modelfile)."""
    lines = [f"stop {_quote(stop)}" for stop in getattr(template, "stop_strings", None) or []]
    options = getattr(template, "options", None) or {}  # a backend's own template may have none
    return lines + [f"{name} {json.dumps(value)}" for name, value in options.items()]


# ---- reading a Modelfile (`/api/create`) --------------------------------------------------------

SUPPORTED = ("FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER")


@dataclass
class Recipe:
    """What a Modelfile asks for: FROM a model, an optional ADAPTER, TEMPLATE, SYSTEM, PARAMETERs."""

    from_: str = ""
    adapter: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, list[str]] = field(default_factory=dict)  # name -> values (stop repeats)


def parse_modelfile(text: str, where: str = "Modelfile") -> Recipe:
    """A Modelfile's instructions as a Recipe; an unsupported or malformed one is an
    InvalidRequest naming its line."""
    recipe, lines, i = Recipe(), text.splitlines(), 0
    while i < len(lines):
        line_no, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word not in SUPPORTED:
            raise InvalidRequest(f"{where} line {line_no}: {word} is not supported (tunelab reads "
                                 f"{', '.join(SUPPORTED)})", param="modelfile")
        if rest.startswith('"""'):
            rest, i = _block(rest[3:], lines, i, where, line_no)
        if not rest:
            raise InvalidRequest(f"{where} line {line_no}: {word} needs a value", param="modelfile")
        _apply(recipe, word, rest, where, line_no)
    if not recipe.from_:
        raise InvalidRequest(f"{where}: no FROM line (the model to build on)", param="modelfile")
    return recipe


def _block(first: str, lines: list[str], i: int, where: str, line_no: int) -> tuple[str, int]:
    """A triple-quoted value, which may span lines; (the text, the next line index)."""
    parts = [first]
    while not parts[-1].endswith('"""'):
        if i >= len(lines):
            raise InvalidRequest(f'{where} line {line_no}: """ is never closed', param="modelfile")
        parts.append(lines[i])
        i += 1
    return "\n".join(parts)[:-3], i


def _apply(recipe: Recipe, word: str, value: str, where: str, line_no: int) -> None:
    if word == "PARAMETER":
        name, _, raw = value.partition(" ")
        if not raw.strip():
            raise InvalidRequest(f"{where} line {line_no}: PARAMETER {name} needs a value", param="modelfile")
        recipe.parameters.setdefault(name.lower(), []).append(_unquote(raw.strip()))
    elif word == "FROM":
        recipe.from_ = value
    else:
        setattr(recipe, word.lower(), value)


def options_of(recipe: Recipe) -> dict[str, Any]:
    """The PARAMETERs other than stop as the model's sampling defaults (Ollama option names,
    typed), checked as a request's `options` would be; one we do not honour is a 400 naming it.
    `OllamaOptions.honoured` is the list of accepted names."""
    from pydantic import ValidationError

    from tunelab.serve.protocol import OllamaOptions

    names, options = OllamaOptions.honoured(), {}
    for name, values in recipe.parameters.items():
        if name == "stop":
            continue
        if name not in names:
            raise InvalidRequest(f"PARAMETER {name} is not supported: tunelab honours "
                                 f"{', '.join(names)}", param="parameters")
        if len(values) > 1:
            raise InvalidRequest(f"PARAMETER {name} is given {len(values)} times; only stop repeats",
                                 param="parameters")
        options[name] = _typed(values[0])
    try:
        OllamaOptions.model_validate(options).to_sampling_params(1)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidRequest(f"PARAMETER {first['loc'][0]} {options.get(first['loc'][0])!r}: {first['msg']}",
                             param="parameters") from None
    except InvalidRequest as err:
        raise InvalidRequest("PARAMETER " + str(err).removeprefix("options."), param="parameters") from None
    return options


def _typed(raw: str) -> Any:
    """A PARAMETER's value: a JSON number (or true/false) as such, else the text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (int, float, bool)) else raw


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text
