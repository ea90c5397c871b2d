"""Decode attention straight over the paged KV cache, as one Triton kernel (CUDA).

The reference path (`attention._decode`) gathers every sequence's context into a padded
(B, KVH, Cmax, D) copy before SDPA: that copy costs as much memory traffic as the attention
itself, and its shape changes every step, so it cannot live in a CUDA graph. This kernel reads
keys and values in place through the block table, so its launch has the same shapes at every
step of a padded decode batch.

One program per (sequence, kv head) handles the query heads of that kv group together (GQA),
walking the context in tiles of TILE tokens with an online softmax (flash-decoding without the
split over the context: decode batches already give the GPU B x KVH programs).

    q (B, H, D) --+--> for tile in context: s = q @ k_tile^T * scale   (G, TILE)
    table (B, NB) |                          m, l, acc updated online
    lens (B,)  ---+--> out = acc / l                                    (B, H, D)

Tests run it on CPU through Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch

try:  # triton ships with CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised by installs without triton
    triton = None

TILE = 32  # context tokens per inner step; >= 16 so both products run on tensor cores
# Products run in fp32 inputs: tf32 for half-precision caches (its 10-bit mantissa holds bf16/fp16
# exactly, and decode attention is bound by memory, not math), full fp32 for fp32 caches. This also
# keeps the kernel testable: Triton's interpreter miscomputes tl.dot on bf16 operands.


def available() -> bool:
    """Whether the kernel can be used (triton importable)."""
    return triton is not None


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                 lens: torch.Tensor, scale: float, window: int | None = None,
                 softcap: float | None = None) -> torch.Tensor:
    """One query per sequence over its paged context.

    q: (B, H, D); k_cache/v_cache: (num_blocks, block_size, KVH, D); tables: (B, max_blocks)
    int32 block ids; lens: (B,) int32 context length (the new token included). -> (B, H, D).
    """
    b, h, d = q.shape
    block_size, kvh = k_cache.shape[1], k_cache.shape[2]
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1:
        raise ValueError("paged_decode needs the head dimension contiguous")
    out = torch.empty((b, h, d), dtype=q.dtype, device=q.device)
    group = h // kvh
    _decode_kernel[(b, kvh)](
        q, k_cache, v_cache, out, tables, lens,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        out.stride(0), out.stride(1), tables.stride(0),
        scale, softcap or 1.0, window or 0,
        GROUP=group, G_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=d, D_PAD=max(16, triton.next_power_of_2(d)), BLOCK_SIZE=block_size, TILE=TILE,
        SOFTCAP=softcap is not None, WINDOW=window is not None,
        PRECISION="ieee" if k_cache.dtype == torch.float32 else "tf32",
    )
    return out


if triton is not None:

    @triton.jit
    def _tanh(x):
        # tl has no tanh on every backend (the interpreter included); 2*sigmoid(2x) - 1 is exact enough
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0

    @triton.jit
    def _decode_kernel(
        Q, K, V, O, Tables, Lens,
        sq_b, sq_h, sk_blk, sk_tok, sk_h, so_b, so_h, st_b,
        scale, softcap, window,
        GROUP: tl.constexpr, G_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
        BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, SOFTCAP: tl.constexpr, WINDOW: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        seq = tl.program_id(0)
        kvh = tl.program_id(1)
        ctx = tl.load(Lens + seq)
        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D_PAD)
        t = tl.arange(0, TILE)
        q_ok = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]
        heads = kvh * GROUP + g
        q = tl.load(Q + seq * sq_b + heads[:, None] * sq_h + d[None, :], mask=q_ok, other=0.0).to(tl.float32)  # (G, D)
        lo = 0
        if WINDOW:  # the query sits at ctx - 1 and sees the last `window` keys
            lo = tl.maximum(ctx - window, 0)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D_PAD], tl.float32)
        for start in range((lo // TILE) * TILE, ctx, TILE):
            pos = start + t  # (TILE,) positions in the sequence
            ok = (pos < ctx) & (pos >= lo)
            block = tl.load(Tables + seq * st_b + pos // BLOCK_SIZE, mask=ok, other=0).to(tl.int64)
            kv_off = block * sk_blk + (pos % BLOCK_SIZE) * sk_tok + kvh * sk_h  # (TILE,)
            kv_ok = ok[:, None] & (d < HEAD_DIM)[None, :]
            k = tl.load(K + kv_off[:, None] + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)  # (TILE, D)
            v = tl.load(V + kv_off[:, None] + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (G, TILE) fp32
            if SOFTCAP:
                s = softcap * _tanh(s / softcap)
            s = tl.where(ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds a visible key
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(O + seq * so_b + heads[:, None] * so_h + d[None, :], out.to(O.dtype.element_ty), mask=q_ok)
