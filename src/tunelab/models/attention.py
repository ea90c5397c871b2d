"""Attention over a paged KV cache for a flat, unpadded batch of sequences.

The cache of one layer is two tensors (num_blocks, block_size, kv_heads, head_dim). A token's
slot is `block * block_size + offset`. New keys/values are written at `slot_mapping`; each
sequence then reads its whole context back through its slots (a gather) and runs SDPA.

Decode tokens (one query per sequence) are attended together in one padded SDPA call, since a
Python loop over 64 sequences x layers would dominate step time; prefill chunks run one by one.
On CUDA, decode tokens instead go to a Triton kernel that reads the blocks in place
(`triton_attention.paged_decode`): no gather, and fixed shapes, so decode steps can be replayed
as CUDA graphs.
Opt-in (`ROWS_DECODE`): CPU decode queries of one KV head go to SDPA as that head's rows (torch's
flash kernel multiplies one query row at a time about 4x slower than a few rows at once).
The batch description (`AttnBatch`) is built once per step by the runner and passed down
explicitly -- no global context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tunelab.models.kv_int8 import Int8Rows

# Opt-in (TUNELAB_ROWS_DECODE=1; benches flip it for A/B): CPU decode queries as rows of their KV head
# (`_decode_rows_sdpa`). Off by default: its other summation order changed greedy outputs (Gemma 3 270M,
# bf16: 2 of 6 chat prompts within 96 tokens, one of them no longer transformers' own).
ROWS_DECODE = os.environ.get("TUNELAB_ROWS_DECODE", "0") == "1"


@dataclass
class PrefillSegment:
    """One sequence with several new tokens: rows [start, start+q_len) of the flat batch."""

    start: int
    q_len: int
    slots: torch.Tensor  # (ctx,) cache slots of the whole context, new tokens included
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (first, end) positions attending both ways


@dataclass
class AttnBatch:
    """Where each token of a flat batch lives in the paged cache; built once per step."""

    positions: torch.Tensor  # (T,) position of each token in its sequence
    slot_mapping: torch.Tensor  # (T,) cache slot each new token's k/v is written to
    prefills: list[PrefillSegment] = field(default_factory=list)
    decode_rows: torch.Tensor | None = None  # (B,) flat rows holding decode tokens
    decode_slots: torch.Tensor | None = None  # (B, Cmax) context slots, padded with 0 (gather path)
    decode_lens: torch.Tensor | None = None  # (B,) int32 context length of each decode sequence
    decode_tables: torch.Tensor | None = None  # (B, max_blocks) int32 block tables (kernel path)
    decode_kernel: bool = False  # decode rows use the Triton kernel over `decode_tables`
    _masks: dict = field(default_factory=dict)

    def decode_mask(self, window: int | None) -> torch.Tensor:
        """(B, 1, 1, Cmax) bool: which padded context slots each decode query may see."""
        key = ("decode", window)
        if key not in self._masks:
            j = torch.arange(self.decode_slots.shape[1], device=self.decode_slots.device)
            lens = self.decode_lens[:, None]
            ok = j[None, :] < lens
            if window is not None:  # query sits at position len-1; keep the last `window` keys
                ok &= (lens - 1 - j[None, :]) < window
            self._masks[key] = ok[:, None, None, :]
        return self._masks[key]

    def decode_window(self, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, window) slots of each decode query's last `window` keys and their (B, 1, 1, window)
        mask (False past a short context): a sliding layer reads O(window) keys, not O(context)."""
        key = ("decode-window", window)
        if key not in self._masks:
            lens = self.decode_lens[:, None].long()
            j = (lens - window).clamp(min=0) + torch.arange(window, device=lens.device)  # (B, window) positions
            slots = self.decode_slots.gather(1, j.clamp(max=self.decode_slots.shape[1] - 1))
            self._masks[key] = (slots, (j < lens)[:, None, None, :])
        return self._masks[key]

    def prefill_mask(self, i: int, window: int | None) -> torch.Tensor | None:
        """(q_len, ctx) bool mask for prefill segment i, or None when plain causal is exact."""
        seg = self.prefills[i]
        ctx = seg.slots.shape[0]
        if window is None and ctx == seg.q_len and not seg.blocks:
            return None
        key = (i, window)
        if key not in self._masks:
            q_pos = torch.arange(ctx - seg.q_len, ctx, device=seg.slots.device)[:, None]
            k_pos = torch.arange(ctx, device=seg.slots.device)[None, :]
            ok = k_pos <= q_pos
            for first, end in seg.blocks:  # an image's tokens see each other both ways (Gemma 3)
                ok |= (q_pos >= first) & (q_pos < end) & (k_pos >= first) & (k_pos < end)
            if window is not None:  # AND the window after the OR, as transformers composes them
                ok &= (q_pos - k_pos) < window
            self._masks[key] = ok
        return self._masks[key]


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor],
    batch: AttnBatch,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    fast_decode: bool = False,
) -> torch.Tensor:
    """q: (T, H, D), k/v: (T, KVH, D) for the new tokens -> attention output (T, H, D).

    `cache` is (keys, values), or (keys, values, key scales, value scales) for an int8 cache.
    `fast_decode`: CPU decode rows take two fp32 matmuls instead of SDPA (`_decode_matmul`); for
    layers whose weights are already inexact (quantized), since it rounds differently from SDPA."""
    k_flat, v_flat = _flat_rows(cache, q.dtype)  # (NB*BS, KVH, D) each, indexable by slots
    k_flat[batch.slot_mapping] = k.to(k_flat.dtype)
    v_flat[batch.slot_mapping] = v.to(v_flat.dtype)
    if batch.decode_rows is not None and not batch.prefills:  # decode only: row i is decode sequence i
        return _decode_rows(q, cache, k_flat, v_flat, batch, scale, window, softcap, fast_decode)
    out = torch.empty_like(q)
    if batch.decode_rows is not None:
        out[batch.decode_rows] = _decode_rows(q[batch.decode_rows], cache, k_flat, v_flat, batch, scale, window,
                                              softcap, fast_decode)
    for i, seg in enumerate(batch.prefills):
        rows = slice(seg.start, seg.start + seg.q_len)
        keys = _gather(k_flat, seg.slots).transpose(0, 1)  # (KVH, ctx, D)
        vals = _gather(v_flat, seg.slots).transpose(0, 1)
        mask = batch.prefill_mask(i, window)
        o = _sdpa(q[rows].transpose(0, 1), keys, vals, mask, scale, softcap)  # (H, q_len, D)
        out[rows] = o.transpose(0, 1)
    return out


def _flat_rows(cache, dtype: torch.dtype):
    """A layer's pools as flat (slots, KVH, D) rows: plain views, or int8 rows that (de)quantize."""
    if len(cache) == 4:
        return Int8Rows(cache[0], cache[2], dtype), Int8Rows(cache[1], cache[3], dtype)
    k_cache, v_cache = cache
    kvh, d = k_cache.shape[-2], k_cache.shape[-1]
    return k_cache.view(-1, kvh, d), v_cache.view(-1, kvh, d)


def _gather(flat, slots: torch.Tensor) -> torch.Tensor:
    """flat (slots, KVH, D) rows at `slots` (any shape S) -> (*S, KVH, D). `index_select` copies whole rows:
    on CPU 6-8x faster than advanced indexing (32 x 170 slots: 2.9 -> 0.4 ms). An int8 pool dequantizes."""
    if isinstance(flat, Int8Rows):
        return flat[slots]
    return flat.index_select(0, slots.reshape(-1)).view(*slots.shape, *flat.shape[1:])


def _decode_rows(q, cache, k_flat, v_flat, batch: AttnBatch, scale, window, softcap, fast) -> torch.Tensor:
    """q: (B, H, D) the decode queries, in decode order -> (B, H, D), by kernel or gather."""
    if batch.decode_kernel:
        from tunelab.models.triton_attention import paged_decode

        return paged_decode(q, cache[0], cache[1], batch.decode_tables, batch.decode_lens, scale, window, softcap)
    return _decode(q, k_flat, v_flat, batch, scale, window, softcap, fast)


def _decode(q, k_flat, v_flat, batch: AttnBatch, scale, window, softcap, fast: bool = False) -> torch.Tensor:
    """q: (B, H, D) one query per sequence -> (B, H, D), attending over padded contexts."""
    cmax = batch.decode_slots.shape[1]
    fast = fast and q.is_cpu and softcap is None
    rows = ROWS_DECODE and q.is_cpu and softcap is None
    if window is not None and cmax > window:  # a sliding layer gathers only the window, whatever the context
        slots, mask = batch.decode_window(window)
        keys, vals = _gather(k_flat, slots).transpose(1, 2), _gather(v_flat, slots).transpose(1, 2)  # (B, KVH, W, D)
        if fast:
            return _decode_matmul(q, keys, vals, mask, scale)
        if rows:
            return _decode_rows_sdpa(q, keys, vals, mask, scale)
        return _sdpa(q.unsqueeze(2), keys, vals, mask, scale, softcap).squeeze(2)
    keys = _gather(k_flat, batch.decode_slots).transpose(1, 2)  # (B, KVH, Cmax, D)
    vals = _gather(v_flat, batch.decode_slots).transpose(1, 2)
    if fast:  # one sequence sees its whole context: no padding, no mask
        return _decode_matmul(q, keys, vals, batch.decode_mask(window) if q.shape[0] > 1 else None, scale)
    if rows:
        return _decode_rows_sdpa(q, keys, vals, batch.decode_mask(window) if q.shape[0] > 1 else None, scale)
    if q.shape[0] == 1 and softcap is None:
        # One sequence seeing its whole context: no padding, so no mask (SDPA is faster without one).
        o = F.scaled_dot_product_attention(q.unsqueeze(2), keys, vals, scale=scale, enable_gqa=True)
    else:
        o = _sdpa(q.unsqueeze(2), keys, vals, batch.decode_mask(window), scale, softcap)  # (B, H, 1, D)
    return o.squeeze(2)


def _decode_rows_sdpa(q, keys, vals, mask, scale) -> torch.Tensor:
    """q: (B, H, D) one query per row over keys/vals (B, KVH, C, D), mask (B, 1, 1, C) or None -> (B, H, D).

    The H/KVH query heads sharing a KV head are that head's query rows, attending to the whole context
    (not causal). The same flash kernel and numerics as SDPA's GQA call (fp32 scores and sums, bf16
    probabilities), 4 rows at a time instead of one: Gemma 3's 4 heads over 1, bf16, 1 thread, 288
    keys: 480 -> 46 us a layer. The fp32 sums may take another order (a bf16 output can differ by
    one unit in the last place, as between batch shapes)."""
    b, h, d = q.shape
    kvh = keys.shape[1]
    o = F.scaled_dot_product_attention(q.view(b, kvh, h // kvh, d), keys, vals, attn_mask=mask, scale=scale)
    return o.view(b, h, d)  # (B, KVH, H/KVH, D) -> (B, H, D): head = kv head * H/KVH + row, as GQA pairs them


def _decode_matmul(q, keys, vals, mask, scale) -> torch.Tensor:
    """q: (B, H, D) one query per row over keys/vals (B, KVH, C, D), mask (B, 1, 1, C) or None -> (B, H, D).

    Two fp32 batched matmuls with the query heads of each KV head stacked as rows: on CPU torch's
    SDPA costs 6-9x more for one query (8 rows x 40 keys: 0.59 vs 0.09 ms; 32 x 300: 21 vs 4.5 ms
    a layer). fp32 scores and softmax like SDPA's, but not its rounding (SDPA rounds the
    unnormalised probabilities to bf16 before the second product), so only for inexact weights."""
    b, h, d = q.shape
    kvh = keys.shape[1]
    scores = torch.matmul(q.view(b, kvh, h // kvh, d).float() * scale, keys.float().transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (B, KVH, H/KVH, C)
    return torch.matmul(scores.softmax(-1), vals.float()).view(b, h, d).to(q.dtype)


def _sdpa(q, k, v, mask, scale, softcap) -> torch.Tensor:
    """Scaled dot-product attention with grouped KV heads; mask True = attend, None = causal."""
    if softcap is not None:
        return _softcapped(q, k, v, mask, scale, softcap)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def _softcapped(q, k, v, mask, scale, softcap) -> torch.Tensor:
    """Explicit attention for models that squash logits with tanh (SDPA cannot)."""
    rep = q.shape[-3] // k.shape[-3]
    k = k.repeat_interleave(rep, dim=-3)
    v = v.repeat_interleave(rep, dim=-3)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if mask is None:
        lq, lk = scores.shape[-2], scores.shape[-1]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)
