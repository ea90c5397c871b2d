"""The process heap during training: every block over 128 KiB in its own mapping (glibc only).

glibc's malloc serves a request above its mmap threshold with a mapping of its own, unmapped on
free; smaller ones come from the brk heap, which keeps freed blocks resident. By default the
threshold is dynamic: freeing a mapped block raises it to that block's size (up to 32 MiB), so after
a training step's first large frees (a logits chunk, a layer's activations) tensors of several MiB
live in the heap, and the peak resident set depends on where they happened to fit: identical runs
peaked 219-285 MiB (docs/planner.md). A fixed threshold makes the peak deterministic (to 0.3 MiB),
lower (freed tensors go back to the OS at once) and so predictable by the planner.

A user who set the threshold (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES) keeps it; on other C
libraries and systems this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's <malloc.h>
THRESHOLD = 128 * 1024  # glibc's initial value, now fixed: tensors above it get their own mapping


def fix_mmap_threshold(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True when this call set it."""
    if not sys.platform.startswith("linux") or _set_by_user():
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # musl and others: another allocator, another policy
    return libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1


def _set_by_user() -> bool:
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
