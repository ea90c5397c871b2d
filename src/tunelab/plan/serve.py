"""The memory serving needs: weights, the paged KV cache per token, and how many sequences fit.

The engine (engine/kv_cache.py) keeps keys and values of every layer for every cached
token, sliding-window layers included, so a token costs 2 x layers x kv_heads x head_dim
values. On CUDA the cache gets what `gpu_memory_utilization` leaves after the weights; on
CPU it is `cpu_kv_cache_gb`.
"""

from __future__ import annotations

import dataclasses

from tunelab.plan.device import GiB, Device
from tunelab.plan.shape import ModelShape
from tunelab.plan.train import CPU_OVERHEAD, CUDA_OVERHEAD

GPU_MEMORY_UTILIZATION = 0.9  # EngineConfig's default
CPU_KV_CACHE_GB = 1.0  # EngineConfig's default


@dataclasses.dataclass(frozen=True)
class ServeEstimate:
    """Weights, KV cache size and the concurrency at `context` tokens per sequence."""

    device: Device
    weights: int
    overhead: int
    kv_per_token: int
    kv_budget: int
    context: int

    @property
    def fits(self) -> bool:
        return self.weights + self.overhead < self.device.budget and self.concurrency >= 1

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_budget // self.kv_per_token)

    @property
    def concurrency(self) -> int:
        """Sequences of `context` tokens the cache holds at once."""
        return self.kv_tokens // max(self.context, 1)


def estimate_serving(shape: ModelShape, device: Device, context: int | None = None,
                     kv_cache_dtype: str = "auto") -> ServeEstimate:
    """Serving `shape` on `device` at bf16 (CUDA) or fp32 (CPU), sequences of `context` tokens;
    kv_cache_dtype 'int8' (EngineConfig) stores a byte per value plus a 4-byte scale per token and head."""
    item = 2 if device.kind == "cuda" else 4
    weights = shape.total_params() * item
    per_head = shape.head_dim + 4 if kv_cache_dtype == "int8" else shape.head_dim * item
    kv_per_token = 2 * shape.layers * shape.kv_heads * per_head
    if device.kind == "cuda":
        overhead = CUDA_OVERHEAD
        budget = int(device.budget * GPU_MEMORY_UTILIZATION) - weights - overhead
    else:
        overhead = CPU_OVERHEAD
        budget = min(int(CPU_KV_CACHE_GB * GiB), device.budget - weights - overhead)
    return ServeEstimate(device, weights, overhead, kv_per_token, max(budget, 0),
                         context or shape.max_positions)
