"""Turn what a user typed for a model into a local Hugging Face model directory."""

from __future__ import annotations

import difflib
from pathlib import Path

from tunelab.errors import HubUnreachable, ModelNotFound
from tunelab.store.index import ModelEntry, Store


def resolve_model(spec: str | Path | None, store: Store | None = None) -> Path:
    """A store name, a local HF directory, a .gguf file or hub id (pulled on first use), or
    None (the embedded default, imported once) -> a Hugging Face model directory."""
    store = store or Store()
    if spec is None or str(spec) == "":
        from tunelab.store.default import ensure_default_model

        return ensure_default_model(store)
    text = str(spec)
    entry = store.get(text)
    if entry is not None:
        if not entry.present:
            raise ModelNotFound(f"store entry '{text}' points to a missing directory {entry.path}; "
                                f"pull it again or `tunelab rm {text}`")
        return Path(entry.path)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    return _pull_on_first_use(text, store)


def _pull_on_first_use(text: str, store: Store) -> Path:
    from tunelab.store.pull import HUB_ID, parse_source, pull

    looks_pullable = text.lower().endswith(".gguf") or text.startswith(("modelscope:", "hf:"))
    if not looks_pullable and not (HUB_ID.match(text) and not Path(text).exists()):
        raise ModelNotFound(not_found_message(text, store))
    src = parse_source(text)
    for entry in store.entries().values():  # pulled before under this source
        if entry.source == src.label and entry.present:
            return Path(entry.path)
    try:
        return Path(pull(text, store=store).path)
    except (HubUnreachable, ModelNotFound) as err:
        raise type(err)(f"{err} ({not_found_message(text, store, short=True)})") from None


def not_found_message(text: str, store: Store, short: bool = False) -> str:
    """'no model named X', with close store names and a pointer to `tunelab list`."""
    hint = _did_you_mean(text, store)
    if short:
        return f"not in the store either.{hint} See `tunelab list`"
    return f"no model named '{text}' in the store or on disk.{hint} See `tunelab list`."


def _did_you_mean(text: str, store: Store) -> str:
    """' Did you mean: a, b?' naming store names that look like `text`, or ''."""
    close = difflib.get_close_matches(text, list(store.entries()), n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _not_in_store(name: str, store: Store) -> ModelNotFound:
    return ModelNotFound(f"no model named '{name}' in the store.{_did_you_mean(name, store)} See `tunelab list`.")


def require_entry(name: str, store: Store) -> ModelEntry:
    """The index entry for `name`, or ModelNotFound listing close names."""
    entry = store.get(name)
    if entry is None:
        raise _not_in_store(name, store)
    return entry


def find_local(spec: str, store: Store) -> tuple[ModelEntry | None, Path]:
    """A store entry and its dir, or a local model dir (no entry); never pulls."""
    entry = store.get(spec)
    if entry is not None:
        return entry, Path(entry.path)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return None, path
    raise _not_in_store(spec, store)
