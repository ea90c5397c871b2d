"""Training metrics: throughput, peak memory, and the start-of-run estimates."""

from __future__ import annotations

import resource
import sys

import torch


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # macOS reports bytes, Linux KiB


def estimate_memory_gb(total_params: int, trainable: int, weight_bytes: int, tokens_per_micro: int,
                       hidden: int, layers: int) -> float:
    """A rough peak: weights + fp32 grads and Adam moments of trainable params + activations.

    Activations use ~34 bytes per token per hidden unit per layer (attention + MLP
    intermediates kept for backward), the usual rule of thumb without checkpointing.
    """
    weights = total_params * weight_bytes
    optim = trainable * (4 + 4 + 8)
    activations = 34 * tokens_per_micro * hidden * layers
    return (weights + optim + activations) / 1e9
