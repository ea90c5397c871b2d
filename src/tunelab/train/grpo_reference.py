"""The KL reference of GRPO under method=full/freeze: the trained tensors' starting values.

Under LoRA the reference is the base with the adapter disabled (train/pairs.reference_weights).
Without an adapter the trained tensors themselves move, so their values at the start are kept
(every weight under full, as TRL's reference model; only the last N layers under freeze) and
swapped in by pointer for the no-grad reference forward, then swapped back: no copy per step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class StartingWeights:
    """A copy of a model's trainable tensors as they are now; `swapped_in()` runs the model on them."""

    def __init__(self, model: nn.Module):
        self.saved = [[p, p.detach().clone()] for p in model.parameters() if p.requires_grad]

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model with its starting values (no grad inside); its current ones restored after."""
        current = []
        for i, (param, start) in enumerate(self.saved):
            if start.device != param.device:  # the trainer moved the model after the copy was taken
                start = self.saved[i][1] = start.to(param.device)
            current.append(param.data)
            param.data = start
        try:
            with torch.no_grad():
                yield
        finally:
            for (param, _), data in zip(self.saved, current):
                param.data = data
