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
    if ":" in text and not text.startswith(("modelscope:", "hf:")):
        return ollama_name(text, store)
    return _pull_on_first_use(text, store)


def gguf_view(path: str | Path, store: Store | None = None) -> Path:
    """A directory with the config and tokenizer of the GGUF file `path` that points at the file
    for its weights (`models.gguf_weights`), built once per file version; never a float copy."""
    import hashlib

    from tunelab.store.import_gguf import import_gguf
    from tunelab.store.staging import publish, staged

    store = store or Store()
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelNotFound(f"GGUF file not found: {path}")
    stat = path.stat()
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|2".encode()).hexdigest()[:12]  # |2: format
    final = store.home / "gguf-views" / f"{path.stem}-{key}"
    with store.model_lock(f"gguf-view-{final.name}"):
        if not (final / "config.json").is_file():
            with staged(store, final.name) as tmp:
                import_gguf(path, tmp, dtype="gguf")
                publish(tmp, final)
    return final


def is_gguf_file(spec: str | Path | None) -> bool:
    """`spec` names an existing .gguf file (rather than a store name or directory)."""
    return spec is not None and str(spec).lower().endswith(".gguf") and Path(str(spec)).expanduser().is_file()


_CHAT_SUFFIXES = ("", "it", "instruct", "chat")


def ollama_name(text: str, store: Store) -> Path:
    """Ollama's NAME:TAG (gemma3:270m, qwen3:0.6b, llama3.1:latest) -> a stored model.

    The rule: NAME then TAG (':latest' dropped), ignoring case and - _ . : /, spell the last part of
    a store name, optionally followed by it/instruct/chat (`qwen3:0.6b` = `Qwen/Qwen3-0.6B`,
    `gemma3:270m` = the embedded `gemma3-270m`). Several matches are an error naming them.
    """
    from tunelab.store.default import DEFAULT_NAME, ensure_default_model

    name, _, tag = text.partition(":")
    wanted = _squash(name + ("" if tag == "latest" else tag))
    lasts = {n: _squash(n.rsplit("/", 1)[-1]) for n in store.entries()}
    found = [n for n, last in lasts.items() if wanted and last.startswith(wanted)
             and last[len(wanted):] in _CHAT_SUFFIXES]
    exact = [n for n in found if lasts[n] == wanted]
    found = exact or found
    if len(found) > 1:
        raise ModelNotFound(f"'{text}' matches several stored models: {', '.join(sorted(found))}; name one")
    if found:
        return resolve_model(found[0], store)
    if wanted == _squash(DEFAULT_NAME):
        return ensure_default_model(store)
    raise ModelNotFound(f"no stored model answers to the Ollama-style name '{text}' (NAME:TAG matches a store "
                        f"name spelled NAME-TAG, e.g. gemma3:270m = gemma3-270m).{_did_you_mean(text, store)} "
                        "See `tunelab list`, or `tunelab pull ORG/NAME` first.")


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_.:/ ")


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
