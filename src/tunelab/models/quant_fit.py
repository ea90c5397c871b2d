"""Choosing int4 codes for a dense weight: per group of inputs, the asymmetric grid (scale, min)
with the least squared error, w ~ scale * q + min, q in 0..15."""

from __future__ import annotations

import torch

FIT_ROWS = 8192
_FIT_STEPS = range(15, 6, -1)  # the grid spans the group's range in k steps; codes use 0..k of 0..15


def fit_int4(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g (rows, groups, size) fp32 -> codes (int32, 0..15), scale, min per group with the least
    squared error: w ~ scale * q + min.

    Min-max (k = 15) wastes levels when the extremes are outliers, and it misses the grid of a
    weight that is already 4-bit (a GGUF's Q4_K import, whose codes in a group may span 0..12):
    with the group's minimum on the grid and the maximum k steps above it, such a group is
    represented exactly. Each group keeps the best of k = 15..7, then one least-squares refit of
    (scale, min) for its codes (the refit is kept only where it lowers the error).
    """
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    best = (None, None, None, torch.full(lo.shape, float("inf")))
    for k in _FIT_STEPS:
        scale = ((hi - lo) / k).clamp(min=1e-10)
        best = _keep_better(best, g, scale, lo, ((g - lo) / scale).round_().clamp_(0, 15))
    q = best[0]
    n, sq, sw = g.shape[-1], q.sum(-1, keepdim=True), g.sum(-1, keepdim=True)
    det = n * (q * q).sum(-1, keepdim=True) - sq * sq
    ok = det > 0
    scale = torch.where(ok, (n * (q * g).sum(-1, keepdim=True) - sq * sw) / det.clamp(min=1e-10), best[1])
    lo = torch.where(ok, (sw - scale * sq) / n, best[2])
    scale = scale.clamp(min=1e-10)
    best = _keep_better(best, g, scale, lo, ((g - lo) / scale).round_().clamp_(0, 15))
    return best[0].to(torch.int32), best[1][..., 0], best[2][..., 0]


def _keep_better(best, g, scale, lo, q):
    err = (q * scale + lo - g).square_().sum(-1, keepdim=True)
    better = err < best[3]
    if best[0] is None:
        return q, scale, lo, err
    return (torch.where(better, q, best[0]), torch.where(better, scale, best[1]),
            torch.where(better, lo, best[2]), torch.where(better, err, best[3]))
