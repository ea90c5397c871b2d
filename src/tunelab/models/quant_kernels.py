"""tunelab's own AVX2 matrix-vector kernels for the quantized linears (`csrc/quant_gemv.cpp`).

torch's CPU kernels for int8 and int4 weights (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`)
dequantize every weight to fp32 and FMA it: compute-bound, well below the memory bandwidth on
an AVX2 CPU. Ours quantize the activations to int8 per block of 32 inputs (llama.cpp's Q8_0)
and take integer dot products, reading torch's own weight formats as they are:

    x (T, K) --quantize per 32--> q (T, K) int8, d (T, K/32)  -> int dots with the codes -> y (T, N)

The extension is compiled once per machine with torch's JIT builder into a cache directory named
after the source, torch and the flags (~40 s on 2 cores), then loaded in well under a second.
Without a compiler, on another architecture, or on a CPU where torch's int4 packing is not the
AVX2 one, `int8`/`int4` return None and `QuantWeight` keeps torch's kernels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from pathlib import Path

import torch

from tunelab.models.quant_layout import int4_pack_block

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csrc") / "quant_gemv.cpp"
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c"]
# Rows up to which ours beat torch's kernel: both cost grows with rows, ours re-reads the
# weight block per row from L1 (gate_up 4096 x 640 ~2.6x faster at 1 row, measured on AVX2).
MAX_ROWS = 16
DTYPES = (torch.bfloat16, torch.float32)
# Where ours are the default: the CPUs they were measured on (AVX512 ones keep torch's, unmeasured).
DEFAULT_CAPABILITIES = ("AVX2",)
enabled = os.environ.get("TUNELAB_QUANT_KERNELS", "1") != "0"  # benches flip it for A/B in one process


def cache_dir() -> Path:
    """The build cache, per machine rather than per store: tests give every test its own
    $TUNELAB_HOME, and the compile must be paid once."""
    return Path(os.environ.get("TUNELAB_KERNEL_CACHE") or Path.home() / ".cache" / "tunelab" / "kernels")


@functools.cache
def ops():
    """The loaded `torch.ops.tunelab_quant` (compiled on first use), or None where it cannot be."""
    if platform.machine().lower() not in ("x86_64", "amd64") or \
            torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils.cpp_extension import load

    key = hashlib.sha256(SOURCE.read_bytes() + f"{torch.__version__} {FLAGS}".encode()).hexdigest()[:12]
    name = f"tunelab_quant_{key}"
    build = cache_dir() / name
    try:
        build.mkdir(parents=True, exist_ok=True)
        load(name=name, sources=[str(SOURCE)], extra_cflags=FLAGS, build_directory=str(build),
             is_python_module=False, verbose=False)
    except Exception as err:  # no compiler, no ninja, a failed build: torch's kernels serve instead
        log.warning("quantized linears use torch's kernels: building %s failed (%s)", SOURCE.name,
                    str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__)
        return None
    return torch.ops.tunelab_quant


def active() -> bool:
    """Whether the quantized linears take our kernels here (enabled, measured on this CPU, built)."""
    return enabled and _default_here()


@functools.cache
def _default_here() -> bool:
    return torch.backends.cpu.get_cpu_capability() in DEFAULT_CAPABILITIES and ops() is not None


def _fits(x: torch.Tensor, scales: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dim() == 2 and x.shape[0] <= MAX_ROWS and x.dtype in DTYPES
            and scales.dtype == x.dtype and x.shape[1] % 32 == 0 and active())


def int8(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor | None:
    """x (T, K) @ (weight (N, K) int8 * scales (N,)).T -> (T, N) in x's dtype, or None where ours do not apply."""
    if not _fits(x, scales):
        return None
    return ops().int8_gemv(x.contiguous(), weight, scales)


def int4(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor | None:
    """x (T, K) against torch's AVX2-packed int4 weight (N, K/2) with (K/group, N, 2) scales and
    zeros -> (T, N) in x's dtype, or None where ours do not apply."""
    if not _fits(x, scales_zeros) or packed.shape[0] % 32 or group % 32 or int4_pack_block() != 32:
        return None
    return ops().int4_gemv(x.contiguous(), packed, scales_zeros, group)
