"""The chat template an exported model carries: jinja source, family and stop strings.

The training template (`tunelab_template.json`, written by tunelab.data.templates)
wins; a tokenizer's own template is the fallback. The family (chatml, llama3,
gemma, mistral) picks the Ollama TEMPLATE and the end-of-turn tokens.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

# family -> (a marker in the jinja source, end-of-turn strings in priority order)
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "llama3": ("<|start_header_id|>", ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]),
    "chatml": ("<|im_start|>", ["<|im_end|>", "<|endoftext|>"]),
    "gemma": ("<start_of_turn>", ["<end_of_turn>", "<eos>"]),
    "mistral": ("[INST]", ["</s>"]),
}


@dataclasses.dataclass
class TemplateInfo:
    """What export needs to know about a chat template."""

    name: str
    source: str
    stop_strings: list[str]
    system: str | None = None

    @property
    def family(self) -> str | None:
        """The built-in family this template renders like, or None for a custom one."""
        return family_of(self.name, self.source)


def family_of(name: str, source: str) -> str | None:
    """Family by template name first, then by the markers in its jinja source."""
    base = (name or "").lower()
    for family in FAMILIES:
        if base.startswith(family):
            return family
    for family, (marker, _) in FAMILIES.items():
        if marker in (source or ""):
            return family
    return None


def template_for(model_dir: Path) -> TemplateInfo | None:
    """The chat template saved with `model_dir` (training template first), or None."""
    saved = model_dir / "tunelab_template.json"
    if saved.is_file():
        return _from_saved(saved)
    source = _tokenizer_template(model_dir)
    if not source:
        return None
    family = family_of("", source)
    stops = FAMILIES[family][1][:2] if family else []
    return TemplateInfo(name=family or "custom", source=source, stop_strings=stops)


def _from_saved(path: Path) -> TemplateInfo:
    data = json.loads(path.read_text(encoding="utf-8"))
    name, source = str(data.get("name", "custom")), str(data.get("source", ""))
    stops = [str(s) for s in data.get("stop_strings") or []]
    if not stops:
        family = family_of(name, source)
        stops = FAMILIES[family][1][:2] if family else []
    eos = data.get("eos_token")
    if eos and eos not in stops:
        stops.append(str(eos))
    return TemplateInfo(name=name, source=source, stop_strings=stops, system=data.get("system"))


def _tokenizer_template(model_dir: Path) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def stop_token_ids(stop_strings: list[str], vocab: dict[str, int]) -> list[int]:
    """Ids of the stop strings that are single tokens, in order, without duplicates."""
    ids: list[int] = []
    for text in stop_strings:
        tid = vocab.get(text)
        if tid is not None and tid not in ids:
            ids.append(tid)
    return ids
