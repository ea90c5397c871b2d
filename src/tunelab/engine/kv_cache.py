"""The paged KV cache: per layer, keys and values as (num_blocks, block_size, kv_heads, head_dim)
(kv_cache_dtype int8: int8 values plus per-token scales, see `models.kv_int8`).

Block ids are handed out by the (torch-free) block manager; this module only owns the memory
and decides how many blocks fit in a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.models import kv_int8
from tunelab.models.spec import ModelSpec


@dataclass
class KVCache:
    """Key and value block pools for every layer.

    The pools hold one block more than `num_blocks`: `spare_block`, which the block manager never
    hands out, takes the writes of padding rows in CUDA-graph decode batches.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    num_blocks: int
    block_size: int

    @property
    def spare_block(self) -> int:
        return self.num_blocks

    @classmethod
    def allocate(cls, spec: ModelSpec, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device, kv_cache_dtype: str = "auto") -> "KVCache":
        """Zeroed pools for `num_blocks` blocks (plus the spare) of `block_size` tokens in each layer;
        kv_cache_dtype 'int8' stores int8 values and per-token scales (`models.kv_int8`)."""
        shape = (num_blocks + 1, block_size, spec.num_kv_heads, spec.head_dim)
        if kv_cache_dtype == "int8":
            return cls([kv_int8.allocate(shape, device) for _ in range(spec.num_layers)], num_blocks, block_size)
        layers = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(spec.num_layers)
        ]
        return cls(layers, num_blocks, block_size)


def bytes_per_block(spec: ModelSpec, block_size: int, dtype: torch.dtype, kv_cache_dtype: str = "auto") -> int:
    """Memory of one block across all layers, keys and values (int8: values plus their scales)."""
    if kv_cache_dtype == "int8":
        per_head = spec.head_dim + kv_int8.SCALE_BYTES
    else:
        per_head = spec.head_dim * torch.empty((), dtype=dtype).element_size()
    return 2 * spec.num_layers * block_size * spec.num_kv_heads * per_head


def blocks_for_budget(spec: ModelSpec, block_size: int, dtype: torch.dtype, budget_bytes: int,
                      kv_cache_dtype: str = "auto") -> int:
    """How many blocks fit in `budget_bytes` (at least one)."""
    return max(1, int(budget_bytes // bytes_per_block(spec, block_size, dtype, kv_cache_dtype)))


def cuda_budget(device: torch.device, utilization: float) -> int:
    """Bytes left for the cache on a GPU when weights are loaded, keeping `1 - utilization` free."""
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    return max(0, int(total * utilization) - used)
