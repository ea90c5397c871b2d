"""Back CPU weights with 2 MB pages.

A one-token decode step streams every weight from DRAM (0.54 GB per token for Gemma 3 270M
in bf16). With 4 KB pages that stream also walks ~130k page-table entries per token; with
2 MB pages the matrix-vector products run ~10% faster (Linux transparent huge pages, which
most distributions offer only to memory that asks for them with madvise).

    params (scattered 4 KB-page allocations) --copy--> one arena, madvise(MADV_HUGEPAGE)

Values, dtypes, shapes and parameter objects stay the same; only their storage moves.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def pack_weights_hugepages(model: nn.Module, copy: bool = True) -> int:
    """Move `model`'s CPU parameters into one huge-page-backed buffer; returns the bytes moved.

    Returns 0 (and changes nothing) off Linux, when transparent huge pages are disabled, or
    when no parameter qualifies. A parameter qualifies when it is on the CPU, contiguous and
    the sole user of its storage (tied weights are one parameter, so they stay tied). Peak
    memory stays ~1x: each old storage is freed as soon as its copy is made. `copy=False`
    is for parameters not filled yet (after `to_empty`): they are re-pointed, not copied, and
    the checkpoint load then writes straight into the 2 MB pages at no extra cost.
    """
    madvise = _madvise()
    params = _packable(model)
    if madvise is None or not params:
        return 0
    offsets, total = _layout(params)
    arena = torch.empty(total + HUGE_PAGE, dtype=torch.uint8)  # untouched: no memory used yet
    start = -arena.data_ptr() % HUGE_PAGE  # first 2 MB boundary inside the buffer
    if madvise(arena.data_ptr() + start, total, _MADV_HUGEPAGE) != 0:  # only whole 2 MB spans get one
        return 0
    with torch.no_grad():
        for p, off in zip(params, offsets):
            nbytes = p.numel() * p.element_size()
            view = arena[start + off:start + off + nbytes].view(p.dtype).view(p.shape)
            if copy:
                view.copy_(p.data)  # first touch: the kernel backs these pages with 2 MB ones
            p.data = view
    return sum(p.numel() * p.element_size() for p in params)


def _packable(model: nn.Module) -> list[nn.Parameter]:
    by_storage: dict[int, list[nn.Parameter]] = {}
    for p in model.parameters():  # deduplicated: a tied weight appears once
        if p.device.type == "cpu" and p.numel():
            by_storage.setdefault(p.untyped_storage().data_ptr(), []).append(p)
    out = []
    for group in by_storage.values():
        p = group[0]
        whole = p.untyped_storage().nbytes() == p.numel() * p.element_size()
        if len(group) == 1 and p.is_contiguous() and whole:
            out.append(p)
    return out


def _layout(params: list[nn.Parameter]) -> tuple[list[int], int]:
    """Byte offsets of each parameter in the arena (64-byte aligned, for vector loads) and its size."""
    offsets, pos = [], 0
    for p in params:
        pos = -(-pos // 64) * 64
        offsets.append(pos)
        pos += p.numel() * p.element_size()
    return offsets, pos


def _madvise():
    """libc's madvise when transparent huge pages can be had by asking, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        setting = _THP_SETTING.read_text()
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    if "[never]" in setting:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc.madvise
