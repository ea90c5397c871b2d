"""Facts about a Hugging Face model directory, for the index and `tunelab show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.atomic import read_json_object
from tunelab.errors import CorruptModelFile
from tunelab.store.staging import dir_size
from tunelab.store.weights import summarize


def read_config(model_dir: Path) -> dict[str, Any]:
    """config.json as a dict; a missing or malformed file is an error naming it."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CorruptModelFile(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    return read_json_object(path, CorruptModelFile)


def chat_template_of(model_dir: Path) -> str | None:
    """The tokenizer's own chat template, by the same rule the chat template object uses."""
    from tunelab.data.templates import own_template

    return own_template(Path(model_dir))


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


def human_count(n: int) -> str:
    """268098176 -> '268.1M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """1072419256 -> '1.07 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
