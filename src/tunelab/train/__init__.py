"""Fine-tuning: `train(cfg)` runs (or resumes) one run into a run directory.

Names load lazily so importing the package does not import torch.
"""

from __future__ import annotations

from tunelab.lazy import lazy_getattr

_LAZY = {"train": "tunelab.train.trainer", "TrainConfig": "tunelab.train.config"}


__getattr__ = lazy_getattr(__name__, _LAZY)
