"""A GGUF tensor's quantized blocks -> integer codes and per-group scales, without rounding.

ggml stores a row as blocks; each block is an fp16 scale (and min) with its integer codes:

    Q8_0  (34 bytes / 32):  d, int8 q[32]                      w = d * q
    Q5_0  (22 bytes / 32):  d, high bits u32, low nibbles[16]  w = d * (q - 16)
    Q4_0  (18 bytes / 32):  d, nibbles[16]                     w = d * (q - 8)
    Q4_K (144 bytes / 256): d, dmin, 6-bit sc/m x 8, nibbles   w = d*sc_j * q - dmin*m_j  (j: 32 values)
    Q6_K (210 bytes / 256): low nibbles, high 2 bits, int8 sc x 16, d   w = d*sc_j * (q - 32)  (j: 16)

`decode` returns (codes, scale, offset) with w = scale * codes - offset per group, in the
format `models.quant` runs: offset is None for the symmetric types (int8 codes) and given for
the unsigned 4-bit ones. The packers are in `export.gguf.kquants` (K-quants) and gguf-py.
"""

from __future__ import annotations

import numpy as np
import torch

Decoded = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # codes (N, K), scale/offset (N, groups)


def _half(raw: np.ndarray) -> np.ndarray:
    """(..., 2) bytes -> (...) fp16 values as float32 (exact)."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _q8_0(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    return b[..., 2:].view(np.int8), _half(b[..., :2]), None


def _q5_0(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    high = np.ascontiguousarray(b[..., 2:6]).view(np.uint32)  # (..., 1): bit j is the 5th bit of q_j
    bits = ((high >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16)  # (..., 32)
    low = b[..., 6:].astype(np.int16)
    q = np.concatenate([low & 0xF, low >> 4], axis=-1) | (bits << 4)
    return (q - 16).astype(np.int8), _half(b[..., :2]), None


def _q4_0(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, low = _half(b[..., :2]), b[..., 2:]
    return np.concatenate([low & 0xF, low >> 4], axis=-1), d, 8 * d


def _q4_k(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, dmin, s = _half(b[..., 0:2]), _half(b[..., 2:4]), b[..., 4:16]
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    m = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    qs = b[..., 16:].reshape(*b.shape[:-1], 4, 1, 32)  # chunk c: low nibbles = sub-block 2c, high = 2c + 1
    q = np.concatenate([qs & 0xF, qs >> 4], axis=-2).reshape(*b.shape[:-1], 256)
    return q, d[..., None] * sc.astype(np.float32), dmin[..., None] * m.astype(np.float32)


def _q6_k(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    lead = b.shape[:-1]
    ql = b[..., :128].reshape(*lead, 2, 2, 32)  # (half, low/high 32 bytes, 32)
    qh = b[..., 128:192].reshape(*lead, 2, 1, 32)
    low = np.stack([ql[..., 0, :] & 0xF, ql[..., 1, :] & 0xF, ql[..., 0, :] >> 4, ql[..., 1, :] >> 4], axis=-2)
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]) & 3  # (..., 2, 4, 32)
    q = (low | (high << 4)).astype(np.int16).reshape(*lead, 256) - 32
    sc = b[..., 192:208].view(np.int8).astype(np.float32)
    return q.astype(np.int8), _half(b[..., 208:210])[..., None] * sc, None


# ggml type name -> (values per block, bytes per block, decoder of (..., bytes) blocks)
LAYOUTS = {"Q8_0": (32, 34, _q8_0), "Q5_0": (32, 22, _q5_0), "Q4_0": (32, 18, _q4_0),
           "Q4_K": (256, 144, _q4_k), "Q6_K": (256, 210, _q6_k)}


def decode(type_name: str, raw: np.ndarray, rows: int, cols: int) -> Decoded:
    """A tensor's bytes (any shape, rows * cols values) -> codes (rows, cols), scale and offset
    (rows, groups) as fp32 torch tensors; `type_name` must be in LAYOUTS."""
    per_block, size, fn = LAYOUTS[type_name]
    blocks = np.ascontiguousarray(raw).view(np.uint8).reshape(rows, cols // per_block, size)
    q, scale, offset = fn(blocks)
    as_t = (lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            .reshape(rows, -1))
    return torch.from_numpy(np.ascontiguousarray(q)).reshape(rows, cols), as_t(scale), as_t(offset)
