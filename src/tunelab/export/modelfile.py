"""Ollama Modelfile: FROM the GGUF, a Go TEMPLATE equivalent to the chat template, stops;
and `parse_modelfile`, which reads one back (FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER) for
the server's /api/create.

Ollama renders prompts with Go's text/template over `.Messages`, so each built-in
family (`ChatTemplate.builtin_family()`) gets a hand-written equivalent of its jinja
template. BOS is left to the GGUF's add_bos flag, exactly as llama.cpp does for the
jinja template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.data.templates import ChatTemplate
from tunelab.errors import InvalidRequest
from tunelab.export.errors import ExportError

_EOS = "\x00eos\x00"  # replaced by the template's EOS text: `default` ends replies with it

OLLAMA_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    ),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "gemma": (
        "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model"
        "{{ else }}user{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
    ),
    "mistral": (
        "{{- range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ .Content }}[/INST]"
        "{{ else if eq .Role \"assistant\" }}{{ .Content }}</s>{{ end }}{{ end }}"
    ),
    "default": (
        "{{- range .Messages }}{{ if eq .Role \"system\" }}{{ .Content }}\n\n"
        "{{ else if eq .Role \"user\" }}### User:\n{{ .Content }}\n\n"
        "{{ else }}### Assistant:\n{{ .Content }}" + _EOS + "{{ end }}{{ end }}### Assistant:\n"
    ),
}


def ollama_template(template: ChatTemplate) -> str:
    """The Go template for a chat template's built-in family; custom jinja cannot be translated."""
    family = template.builtin_family()
    if family is None:
        raise ExportError(f"chat template '{template.name}' is custom jinja with no Ollama "
                          f"equivalent; train with one of: {', '.join(OLLAMA_TEMPLATES)}")
    return OLLAMA_TEMPLATES[family].replace(_EOS, template.eos_token)


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
