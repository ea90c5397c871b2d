"""The local model store under $TUNELAB_HOME: an index of Hugging Face model directories."""

from tunelab.store.index import ModelEntry, Store, tunelab_home

__all__ = ["ModelEntry", "Store", "tunelab_home"]
