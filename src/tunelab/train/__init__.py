"""Fine-tuning: `train(cfg)` runs (or resumes) one run into a run directory.

Names load lazily so importing the package does not import torch.
"""

from __future__ import annotations

_LAZY = {"train": "tunelab.train.trainer", "TrainConfig": "tunelab.train.config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunelab.train' has no attribute {name!r}")
