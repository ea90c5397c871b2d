"""Facts about a Hugging Face model directory, for the index and `tunelab show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import CorruptModelFile
from tunelab.store.staging import dir_size
from tunelab.store.weights import summarize


def read_config(model_dir: Path) -> dict[str, Any]:
    """config.json as a dict; a missing or malformed file is an error naming it."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CorruptModelFile(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptModelFile(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CorruptModelFile(f"{path}: expected a JSON object")
    return data


def chat_template_of(model_dir: Path) -> str | None:
    """The tokenizer's own chat template (chat_template.jinja or tokenizer_config.json), if any."""
    model_dir = Path(model_dir)
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file():
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, list):  # named templates: use the default one
                template = next((t.get("template") for t in template if t.get("name") == "default"), None)
            if template:
                return str(template)
    return None


def architecture_of(config: dict[str, Any]) -> str:
    """The model family: config's model_type, else its first architecture class."""
    return str(config.get("model_type") or (config.get("architectures") or [""])[0])


def describe(model_dir: Path) -> dict[str, Any]:
    """Index facts for a model dir; checks config.json and every safetensors header."""
    config = read_config(model_dir)
    weights = summarize(model_dir)
    return dict(
        architecture=architecture_of(config),
        params=weights.params,
        dtype=weights.dtype,
        size_bytes=dir_size(model_dir),
        has_chat_template=chat_template_of(model_dir) is not None,
    )
