"""The store index: `models.json` under $TUNELAB_HOME, guarded by a file lock.

Each model is a Hugging Face directory under `models/NAME`. Writers take the lock,
re-read the index, change it and replace the file atomically, so two processes
pulling at once never lose an entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock


def tunelab_home() -> Path:
    """$TUNELAB_HOME, or ~/.cache/tunelab."""
    return Path(os.environ.get("TUNELAB_HOME") or Path.home() / ".cache" / "tunelab")


def safe_dir_name(name: str) -> str:
    """A model name as one path component: 'org/name' -> 'org--name'."""
    return name.replace("/", "--").replace(":", "-")


@dataclasses.dataclass
class ModelEntry:
    """One stored model and the facts `tunelab list` shows."""

    name: str
    path: str
    architecture: str = ""
    params: int = 0
    dtype: str = ""
    size_bytes: int = 0
    source: str = ""
    has_chat_template: bool = False
    created: float = dataclasses.field(default_factory=time.time)

    @property
    def present(self) -> bool:
        """Its directory still holds a model; False once it was deleted or lost in a crash."""
        return (Path(self.path) / "config.json").is_file()


class Store:
    """The model index and directories under one home folder."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else tunelab_home()
        self.models_dir = self.home / "models"
        self.tmp_dir = self.home / "tmp"
        self.index_path = self.home / "models.json"

    @contextmanager
    def locked(self) -> Iterator[dict[str, ModelEntry]]:
        """Hold the index lock; yield the entries; write them back atomically on exit."""
        self.home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.index_path) + ".lock", timeout=600):
            entries = self._read()
            yield entries
            self._write(entries)

    def entries(self) -> dict[str, ModelEntry]:
        """A snapshot of the index (no lock needed: writes replace the file atomically)."""
        return self._read()

    def get(self, name: str) -> ModelEntry | None:
        """The entry for `name`, or None."""
        return self._read().get(name)

    def add(self, entry: ModelEntry) -> None:
        """Insert or replace an entry."""
        with self.locked() as entries:
            entries[entry.name] = entry

    def remove(self, name: str) -> ModelEntry | None:
        """Drop an entry from the index; the caller deletes its directory."""
        with self.locked() as entries:
            return entries.pop(name, None)

    @contextmanager
    def model_lock(self, name: str) -> Iterator[None]:
        """Hold a per-model lock while a model is pulled or removed, so two processes
        pulling the same model do the work once and the second finds it done."""
        locks = self.home / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / (safe_dir_name(name) + ".lock")), timeout=-1):
            yield

    def model_path(self, name: str) -> Path:
        """Where a model named `name` lives (or will live) in the store."""
        return self.models_dir / safe_dir_name(name)

    def new_tmp_dir(self, prefix: str) -> Path:
        """A fresh temp dir on the same filesystem as the store, so a final rename is atomic;
        its name says which process owns it (see `tunelab.store.staging.sweep_leftovers`)."""
        from tunelab.atomic import make_temp_dir

        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return make_temp_dir(self.tmp_dir, prefix)

    def _read(self) -> dict[str, ModelEntry]:
        if not self.index_path.exists():
            return {}
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            from tunelab.errors import CorruptModelFile

            raise CorruptModelFile(f"{self.index_path}: corrupt store index ({err})") from None
        known = {f.name for f in dataclasses.fields(ModelEntry)}
        return {k: ModelEntry(**{a: b for a, b in v.items() if a in known}) for k, v in raw.items()}

    def _write(self, entries: dict[str, ModelEntry]) -> None:
        tmp = self.index_path.with_suffix(f".json.tmp{os.getpid()}")
        data = {k: dataclasses.asdict(v) for k, v in sorted(entries.items())}
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, self.index_path)
