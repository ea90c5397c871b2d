"""Turn what a user typed for a model into a local Hugging Face model directory."""

from __future__ import annotations

import difflib
from pathlib import Path

from tunelab.errors import ModelNotFound
from tunelab.store.index import Store


def resolve_model(spec: str | Path | None, store: Store | None = None) -> Path:
    """A store name, a local HF directory, or None (the embedded default) -> model directory."""
    store = store or Store()
    if spec is None or str(spec) == "":
        from tunelab.store.default import ensure_default_model

        return ensure_default_model(store)
    text = str(spec)
    entry = store.get(text)
    if entry is not None:
        return Path(entry.path)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise ModelNotFound(_not_found_message(text, store))


def _not_found_message(text: str, store: Store) -> str:
    names = list(store.entries())
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"no model named '{text}' in the store or on disk.{hint} See `tunelab list`."
