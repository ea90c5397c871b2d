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

    def model_path(self, name: str) -> Path:
        """Where a model named `name` lives (or will live) in the store."""
        return self.models_dir / name.replace("/", "--")

    def new_tmp_dir(self, prefix: str) -> Path:
        """A fresh temp dir on the same filesystem as the store, so a final rename is atomic."""
        import tempfile

        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=self.tmp_dir))

    def _read(self) -> dict[str, ModelEntry]:
        if not self.index_path.exists():
            return {}
        raw = json.loads(self.index_path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(ModelEntry)}
        return {k: ModelEntry(**{a: b for a, b in v.items() if a in known}) for k, v in raw.items()}

    def _write(self, entries: dict[str, ModelEntry]) -> None:
        tmp = self.index_path.with_suffix(f".json.tmp{os.getpid()}")
        data = {k: dataclasses.asdict(v) for k, v in sorted(entries.items())}
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, self.index_path)
