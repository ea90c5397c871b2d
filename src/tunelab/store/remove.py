"""Deleting a model: its directory first, then its index entry."""

from __future__ import annotations

import shutil

from tunelab.errors import ModelNotFound
from tunelab.store.index import ModelEntry, Store


def remove_model(name: str, store: Store | None = None) -> ModelEntry:
    """Delete model `name` from the store and return its old entry.

    The directory goes first: a crash in between leaves an entry that `list` marks
    missing and `pull` repairs, never an unlisted directory eating disk.
    """
    store = store or Store()
    with store.model_lock(name):
        entry = store.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named '{name}' in the store. See `tunelab list`.")
        if entry.path.startswith(str(store.models_dir)):  # never delete a dir we did not create
            shutil.rmtree(entry.path, ignore_errors=True)
        store.remove(name)
    return entry
