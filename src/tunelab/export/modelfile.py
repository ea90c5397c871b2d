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

from dataclasses import dataclass, field

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
    """Modelfile text: FROM, TEMPLATE, one PARAMETER stop per stop string, SYSTEM."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{ollama_template(template)}"""']
    lines += [f"PARAMETER stop {_quote(stop)}" for stop in template.stop_strings]
    system = system if system is not None else template.system
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text
