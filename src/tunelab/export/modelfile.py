"""Ollama Modelfile: FROM the GGUF, a Go TEMPLATE equivalent to the chat template, stops.

Ollama renders prompts with Go's text/template over `.Messages`, so each built-in
family (`ChatTemplate.builtin_family()`) gets a hand-written equivalent of its jinja
template. BOS is left to the GGUF's add_bos flag, exactly as llama.cpp does for the
jinja template.
"""

from __future__ import annotations

from tunelab.data.templates import ChatTemplate
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
