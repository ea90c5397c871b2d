"""Q4_K, Q5_K and Q6_K quantizers in vectorized numpy, following ggml's reference ones.

A K-quant super-block holds 256 values of one row:
- Q4_K (144 bytes) / Q5_K (176 bytes): fp16 `d` and `dmin`, then eight 6-bit scales and
  eight 6-bit mins packed into 12 bytes, then the codes (Q5_K adds a 32-byte high-bit
  plane). Value = d * scale_j * q - dmin * min_j, for sub-block j of 32 values.
- Q6_K (210 bytes): 4-bit low codes, 2-bit high codes, sixteen int8 scales, fp16 `d`.
  Value = d * scale_j * (q - 32), for sub-block j of 16 values.

The search for each sub-block's scale (and min) is ggml's `make_qkx2_quants` /
`make_qx_quants` without an importance matrix, run on all sub-blocks at once. All
arithmetic stays float32 and sub-blocks lie in columns, so numpy's sums over axis 0 add
in the C loops' order: the bytes match llama.cpp's `llama_model_quantize` (>99% of rows).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

QK_K = 256
_EPS = np.float32(1e-15)  # ggml's GROUP_MAX_EPS: a group this small is all zero
f32 = np.float32


def _fp16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 bytes as uint16, the value read back as float32)."""
    half = x.astype(np.float16)
    return half.view(np.uint16), half.astype(np.float32)


def _fit_scale_min(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                   nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares fit of x ~ scale * L - min, L in [0, nmax], per column of x (n, G).

    Tries nstep+1 candidate inverse scales around nmax/(max-min) and keeps the best;
    as in ggml, later candidates start from the best min found so far.
    Returns (scale (G,), min (G,) as a positive offset, L (n, G) uint8).
    """
    lo = np.minimum(x.min(axis=0), f32(0))
    hi = x.max(axis=0)
    flat = hi == lo
    span = np.where(flat, f32(1), hi - lo)
    sum_w, sum_x = w.sum(axis=0), (w * x).sum(axis=0)  # axis 0 of (n, G): summed in order, like C
    iscale = f32(nmax) / span
    scale = f32(1) / iscale
    L = np.clip(np.rint(iscale * (x - lo)), 0, nmax)
    best = (w * np.square(scale * L + lo - x)).sum(axis=0)
    for step in range(nstep + 1):
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / np.where(flat, f32(1), hi - lo)
        cand = np.clip(np.rint(iscale * (x - lo)), 0, nmax)
        wl = w * cand
        sum_l, sum_l2, sum_xl = wl.sum(axis=0), (wl * cand).sum(axis=0), (wl * x).sum(axis=0)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = np.where(ok, det, f32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        positive = this_min > 0  # an offset above zero is not allowed: refit the scale alone
        this_min = np.where(positive, f32(0), this_min)
        this_scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, f32(1)), this_scale)
        err = (w * np.square(this_scale * cand + this_min - x)).sum(axis=0)
        take = ok & (err < best) & ~flat
        L = np.where(take, cand, L)
        best, scale, lo = np.where(take, err, best), np.where(take, this_scale, scale), np.where(take, this_min, lo)
    return np.where(flat, f32(0), scale), -lo, np.where(flat, f32(0), L).astype(np.uint8)


def _fit_symmetric(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ scale * l, l in [-nmax, nmax-1], weighted by x^2, per column of x (n, G).

    Tries 19 inverse scales around -nmax/max (max = the value of largest magnitude).
    Returns (scale (G,), L = l + nmax (n, G) uint8).
    """
    cols = np.arange(x.shape[1])
    big = x[np.abs(x).argmax(axis=0), cols]
    zero = np.abs(big) < _EPS
    big = np.where(zero, f32(1), big)
    w = x * x

    def attempt(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lv = np.clip(np.rint(iscale * x), -nmax, nmax - 1)
        wl = w * lv
        return lv, (wl * x).sum(axis=0), (wl * lv).sum(axis=0)

    lv, sumlx, suml2 = attempt(f32(-nmax) / big)
    scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, f32(1)), f32(0))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        cand, slx, sl2 = attempt(-(f32(nmax) + f32(0.1) * f32(step)) / big)
        take = (sl2 > 0) & (slx * slx > best * sl2)
        lv = np.where(take, cand, lv)
        scale = np.where(take, slx / np.where(sl2 > 0, sl2, f32(1)), scale)
        best = np.where(take, scale * slx, best)
    return np.where(zero, f32(0), scale), np.where(zero, f32(0), lv + f32(nmax)).astype(np.uint8)


def _pack_scale_min(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per block (nb, 8) -> ggml's 12-byte layout (nb, 12)."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _asym_codes(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, ...]:
    """Shared Q4_K/Q5_K step: x (nb, 256) -> (d, dmin as fp16 bits, packed scales, L (nb, 256))."""
    nb = x.shape[0]
    sub = np.ascontiguousarray(x.reshape(nb * 8, 32).T)  # (32, G): sums over axis 0 run in C's order
    av = np.sqrt((sub * sub).sum(axis=0) / f32(32))
    scales, mins, L0 = _fit_scale_min(sub, av + np.abs(sub), nmax, rmin, 0.1, nstep)
    L0 = L0.T
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), f32(0))
    max_min = np.maximum(mins.max(axis=1), f32(0))
    inv_s = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_m = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.minimum(np.rint(inv_s[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(np.rint(inv_m[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    d_bits, d = _fp16(max_scale / f32(63))
    m_bits, dmin = _fp16(max_min / f32(63))
    step = (d[:, None] * ls.astype(np.float32))[:, :, None]  # (nb, 8, 1)
    offset = (dmin[:, None] * lm.astype(np.float32))[:, :, None]
    safe = np.where(step == 0, f32(1), step)
    codes = np.clip(np.rint((x.reshape(nb, 8, 32) + offset) / safe), 0, nmax)
    L = np.where(step == 0, L0.reshape(nb, 8, 32), codes).astype(np.uint8).reshape(nb, QK_K)
    return d_bits, m_bits, _pack_scale_min(ls, lm), L


def _head(d_bits: np.ndarray, m_bits: np.ndarray) -> np.ndarray:
    return np.stack([d_bits, m_bits], axis=1).view(np.uint8)  # (nb, 4): d then dmin, little-endian


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 144) Q4_K blocks."""
    d, m, scales, L = _asym_codes(x, 15, -1.0, 20)
    q = L.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([_head(d, m), scales, qs], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 176) Q5_K blocks."""
    d, m, scales, L = _asym_codes(x, 31, -0.5, 15)
    q = L.reshape(-1, 4, 2, 32)
    low = q & 0xF
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)  # bit 2c+h for chunk c, half h
    qh = np.bitwise_or.reduce(((q >> 4) << shifts).reshape(-1, 8, 32), axis=1).astype(np.uint8)
    return np.concatenate([_head(d, m), scales, qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 210) Q6_K blocks."""
    nb = x.shape[0]
    scales, L0 = _fit_symmetric(np.ascontiguousarray(x.reshape(nb * 16, 16).T), 32)
    L0 = L0.T
    scales = scales.reshape(nb, 16)
    pick = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), pick]
    empty = np.abs(max_scale) < _EPS
    iscale = f32(-128) / np.where(empty, f32(1), max_scale)
    d_bits, d = _fp16(f32(1) / iscale)
    sc = np.minimum(np.rint(iscale[:, None] * scales), 127).astype(np.int8)
    step = (d[:, None] * sc.astype(np.float32))[:, :, None]  # (nb, 16, 1)
    safe = np.where(step == 0, f32(1), step)
    codes = np.clip(np.rint(x.reshape(nb, 16, 16) / safe), -32, 31) + 32
    L = np.where(step == 0, L0.reshape(nb, 16, 16), codes).astype(np.uint8).reshape(nb, 2, 4, 32)
    low, high = L & 0xF, L >> 4
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    blocks = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8),
                             d_bits.reshape(nb, 1).view(np.uint8)], axis=1)
    blocks[empty] = 0
    return blocks


QUANTIZERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "Q4_K": (quantize_q4_k, 144), "Q5_K": (quantize_q5_k, 176), "Q6_K": (quantize_q6_k, 210)}
_CHUNK_BLOCKS = 4096  # 1M values at a time keeps the search's temporaries near 100 MB


def quantize_k(data: np.ndarray, qtype: str) -> np.ndarray:
    """float32 (rows, cols), cols % 256 == 0 -> uint8 (rows, cols // 256 * block bytes)."""
    fn, size = QUANTIZERS[qtype]
    rows, cols = data.shape
    blocks = np.ascontiguousarray(data, dtype=np.float32).reshape(-1, QK_K)
    out = np.empty((blocks.shape[0], size), dtype=np.uint8)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        out[start:start + _CHUNK_BLOCKS] = fn(blocks[start:start + _CHUNK_BLOCKS])
    return out.reshape(rows, cols // QK_K * size)
