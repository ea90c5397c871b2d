"""torch's CPU int4 weight layout, which follows the CPU's vector width, and the scratch buffer
the quantized matmuls reuse for their dequantized tiles and unpacked nibbles."""

from __future__ import annotations

import functools
import threading

import torch

_NIBBLES = 0x0F0F0F0F0F0F0F0F  # low nibble of each byte of an int64 word


def unpack_int4(packed: torch.Tensor, out: torch.Tensor) -> None:
    """packed: (n, K/2) uint8 in the CPU int4 layout -> `out` (K, n) holding q in 0..15.

    torch packs per block of `b` output rows (`int4_pack_block`: 64 on AVX512, 32 on AVX2) a
    (K, b/2) byte matrix: low nibbles are rows 0..b/2-1, high nibbles rows b/2..b-1. Eight bytes
    at a time, they land (already transposed) in a uint8 scratch, then widen to out's dtype.
    """
    k, n = out.shape
    b = int4_pack_block()
    words = packed.reshape(n // b, k, b // 2).view(torch.int64)  # (n/b, K, b/16)
    q = scratch(k * n, torch.uint8, out.device)[:k * n].view(k, n)
    q64 = q.view(k, n // b, b).view(torch.int64).transpose(0, 1)  # (n/b, K, b/8)
    torch.bitwise_and(words, _NIBBLES, out=q64[..., :b // 16])
    high = q64[..., b // 16:]
    torch.bitwise_right_shift(words, 4, out=high)
    high.bitwise_and_(_NIBBLES)
    out.copy_(q)


@functools.cache
def int4_pack_block() -> int:
    """Rows per block of torch's CPU int4 packing on this machine (it follows the CPU's vector
    width: 64 with AVX512, 32 with AVX2), found by packing a probe; 0 for a layout we do not know."""
    q = (torch.arange(64)[:, None] * 7 + torch.arange(32)[None, :] * 3).remainder(16).to(torch.int32)  # (64, 32)
    packed = torch._convert_weight_to_int4pack_for_cpu(q, 1).view(-1)
    for b in (64, 32):
        blocks = q.view(64 // b, 2, b // 2, 32).permute(0, 3, 2, 1)  # (64/b, K, b/2, lo|hi)
        if torch.equal(packed, (blocks[..., 0] | blocks[..., 1] << 4).to(torch.uint8).flatten()):
            return b
    return 0


_SCRATCH = threading.local()  # per thread: two engines stepping in one process never share a tile


def scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One reused buffer per (dtype, device) and thread, grown to the largest tile; an engine steps
    one batch at a time, so every quantized linear shares it."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get((dtype, device))
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
            buf = buffers[(dtype, device)] = torch.empty(numel, dtype=dtype, device=device)
    return buf
