"""int8 KV cache rows: symmetric int8 values with one fp32 scale per token per KV head.

A layer's int8 cache is four tensors: keys and values (num_blocks, block_size, kv_heads, head_dim)
int8, and their scales (num_blocks, block_size, kv_heads) fp32. Each token is quantized once, when
its k/v is written (x = q * s, s = max|x| / 127 over head_dim), and dequantized when attention
gathers it. Per-token scales never need re-quantizing a half-filled block, and a token's bytes do
not depend on its neighbours, so batching and prefix reuse give the same values as running alone.
Cost per token and head: head_dim + 4 bytes instead of 2 * head_dim (bf16).
"""

from __future__ import annotations

import torch

SCALE_BYTES = 4  # one fp32 scale per token per KV head, keys and values each


class Int8Rows:
    """The flat (slots, kv_heads, head_dim) view of one int8 pool, indexed like a tensor:
    `rows[slots] = x` quantizes, `rows[index]` returns dequantized values in `dtype`."""

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype):
        kvh, d = values.shape[-2], values.shape[-1]
        self.values = values.view(-1, kvh, d)  # (slots, KVH, D) int8
        self.scales = scales.view(-1, kvh)  # (slots, KVH) fp32
        self.dtype = dtype

    def __setitem__(self, slots: torch.Tensor, x: torch.Tensor) -> None:
        """x: (T, KVH, D) new keys or values for `slots` (T,)."""
        h = x.float()
        scale = (h.abs().amax(-1) / 127).clamp(min=1e-12)  # (T, KVH)
        self.values[slots] = (h / scale[..., None]).round_().clamp_(-127, 127).to(torch.int8)
        self.scales[slots] = scale

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """index: any shape S of slots -> (*S, KVH, D) in `dtype`."""
        return (self.values[index].float() * self.scales[index][..., None]).to(self.dtype)


def allocate(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Zeroed (keys, values, key scales, value scales) for one layer; `shape` as a bf16 pool's."""
    scale_shape = shape[:-1]
    return (torch.zeros(shape, dtype=torch.int8, device=device), torch.zeros(shape, dtype=torch.int8, device=device),
            torch.zeros(scale_shape, device=device), torch.zeros(scale_shape, device=device))
