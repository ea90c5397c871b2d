"""tunelab.heap: after fix_mmap_threshold a 1 MiB block is its own mapping even after an 8 MiB free,
which under glibc's dynamic threshold would have raised the threshold and put it in the heap."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallinfo2)",
)

# In a fresh interpreter (this process's heap has a history): optionally fix the threshold, free
# an 8 MiB block, then allocate 1 MiB and report whether it was mapped (mallinfo2's hblkhd grew).
CHILD = """
import ctypes, json, sys
from tunelab.heap import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else None
libc.free(libc.malloc(8 << 20))
mapped = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(json.dumps({"fixed": fixed, "mapped": libc.mallinfo2().hblkhd - mapped >= 1 << 20}))
libc.free(block)
"""


def child(mode: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_" and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60,
                         env={**base, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_fixed_threshold_maps_large_blocks_after_a_large_free():
    assert child("fix") == {"fixed": True, "mapped": True}
    assert child("default") == {"fixed": None, "mapped": False}  # glibc's dynamic threshold: in the heap


def test_a_threshold_the_user_set_is_kept():
    assert child("fix", MALLOC_MMAP_THRESHOLD_="33554432") == {"fixed": False, "mapped": False}
