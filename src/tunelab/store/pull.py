"""`pull`: bring a model into the store from a hub, a local directory or a GGUF file.

Every source is built into a temp dir, checked, renamed into `models/NAME`, and only
then added to the index. A per-model lock makes a second concurrent pull of the same
model wait and then find it done; the index lock keeps concurrent pulls of different
models from losing each other's entries.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.errors import CorruptModelFile, ModelNotFound, TunelabError
from tunelab.store.describe import describe, read_config
from tunelab.store.hub import ALLOW_PATTERNS, fetch_hf, fetch_modelscope
from tunelab.store.index import ModelEntry, Store
from tunelab.store.staging import copy_file, publish, staged
from tunelab.store.weights import read_header

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NAME = re.compile(r"^[A-Za-z0-9][\w.:/-]*$")
Say = Callable[[str], None]


@dataclass
class Source:
    """What a pull reads from: `kind` is hf, modelscope, dir or gguf."""

    kind: str
    ref: str

    @property
    def label(self) -> str:
        """How the index records the source."""
        return f"{self.kind}:{self.ref}" if self.kind in ("hf", "modelscope") else self.ref

    def default_name(self) -> str:
        if self.kind in ("hf", "modelscope"):
            return self.ref
        return Path(self.ref).stem if self.kind == "gguf" else Path(self.ref).name


def parse_source(text: str) -> Source:
    """Classify what the user typed: modelscope:ORG/NAME, a local dir or .gguf, or a
    Hugging Face id (org/name or hf:org/name; org/name is ModelScope's under `use_modelscope()`)."""
    if text.startswith("modelscope:"):
        return Source("modelscope", text.split(":", 1)[1])
    if text.startswith("hf:"):
        return Source("hf", text[3:])
    path = Path(text).expanduser()
    if path.is_dir():
        return Source("dir", str(path.resolve()))
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"GGUF file not found: {path}")
        return Source("gguf", str(path.resolve()))
    if path.exists():
        raise TunelabError(f"{path}: not a model directory or a .gguf file")
    if HUB_ID.match(text):
        return Source("modelscope" if use_modelscope() else "hf", text)
    raise ModelNotFound(f"'{text}' is not a local directory, a .gguf file or a hub id like org/name")


def use_modelscope() -> bool:
    """Bare hub ids resolve on ModelScope when VLLM_USE_MODELSCOPE or TUNELAB_USE_MODELSCOPE is on
    (vLLM's switch, so tutorials' environments work unchanged)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("TUNELAB_USE_MODELSCOPE", "VLLM_USE_MODELSCOPE"))


def pull(source: str, name: str | None = None, store: Store | None = None, dtype: str = "float32",
         say: Say = lambda _: None, label: str | None = None) -> ModelEntry:
    """Pull `source` into the store as `name` (default: derived from the source) and return
    its index entry. Pulling a model that is already there is a no-op."""
    store = store or Store()
    src = parse_source(source)
    name = name or src.default_name()
    if not NAME.match(name) or ".." in name:
        raise TunelabError(f"--name: '{name}' is not a valid model name (letters, digits, . _ - / :)")
    with store.model_lock(name):
        existing = _existing(store, name, label or src.label)
        if existing is not None:
            say(f"{name} is already in the store")
            return existing
        return _build(store, src, name, dtype, say, label or src.label)


def _existing(store: Store, name: str, label: str) -> ModelEntry | None:
    entry = store.get(name)
    if entry is None or not entry.present:
        return None  # absent, or its dir was lost: pull again
    if entry.source != label:
        raise TunelabError(f"a model named '{name}' already exists (from {entry.source}); "
                           f"choose another --name or `tunelab rm {name}` first")
    return entry


def _build(store: Store, src: Source, name: str, dtype: str, say: Say, label: str) -> ModelEntry:
    started = time.time()
    with staged(store, name, say) as tmp:
        _fetch(store, src, tmp, dtype, say)
        facts = describe(tmp)
        final = store.model_path(name)
        publish(tmp, final)
    entry = ModelEntry(name=name, path=str(final), source=label, **facts)
    store.add(entry)
    say(f"pulled {name} in {time.time() - started:.1f}s")
    return entry


def _fetch(store: Store, src: Source, tmp: Path, dtype: str, say: Say) -> None:
    if src.kind == "hf":
        say(f"downloading {src.ref} from the Hugging Face Hub")
        fetch_hf(src.ref, tmp, store)
    elif src.kind == "modelscope":
        say(f"downloading {src.ref} from ModelScope")
        fetch_modelscope(src.ref, tmp, store)
    elif src.kind == "dir":
        say(f"copying {src.ref}")
        copy_model_dir(Path(src.ref), tmp)
    else:
        from tunelab.store.import_gguf import import_gguf

        say(f"importing {src.ref}")
        import_gguf(Path(src.ref), tmp, dtype=dtype)


def copy_model_dir(src: Path, dest: Path) -> None:
    """Copy a local HF model dir's weights, config and tokenizer files, checking them first."""
    read_config(src)
    weights = sorted(src.glob("*.safetensors"))
    if not weights:
        raise CorruptModelFile(f"{src}: no *.safetensors weights (tunelab stores safetensors only)")
    for path in weights:
        read_header(path)  # a truncated file fails here, before anything is copied
    for path in _model_files(src):
        copy_file(path, dest / path.name)


def _model_files(src: Path) -> list[Path]:
    return sorted({p for pattern in ALLOW_PATTERNS for p in src.glob(pattern) if p.is_file()})
