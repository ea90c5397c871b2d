"""tunelab's own AVX2 / AVX-512 matrix-vector kernels for the quantized linears (`csrc/quant_gemv*.cpp`).

torch's CPU kernels for int8 and int4 weights (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`)
dequantize every weight to fp32 and FMA it: compute-bound, well below the memory bandwidth on
an AVX2 CPU. Ours quantize the activations to int8 per block of 32 inputs (llama.cpp's Q8_0)
and take integer dot products, reading torch's own weight formats as they are:

    x (T, K) --quantize per 32--> q (T, K) int8, d (T, K/32)  -> int dots with the codes -> y (T, N)

The extension is compiled once per machine with torch's JIT builder into a cache directory named
after the sources, torch and the flags (~1 min on 2 cores), then loaded in well under a second.
The flags follow the CPU (`flags`): AVX2 always; AVX-512 (BW/VL/DQ/VBMI, and VNNI's vpdpbusd
where present) adds the 512-bit kernels, which read torch's AVX512 int4 packing (64-row blocks).
Without a compiler, on another architecture, or where torch's int4 packing is one this build
cannot read, `int8`/`int4` return None and `QuantWeight` keeps torch's kernels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from pathlib import Path

import torch

from tunelab.dtypes import cpu_flags
from tunelab.models.quant_layout import int4_pack_block

log = logging.getLogger(__name__)
CSRC = Path(__file__).with_name("csrc")
SOURCES = [CSRC / "quant_gemv.cpp", CSRC / "quant_gemv512.cpp", CSRC / "decode_ops.cpp", CSRC / "head_ops.cpp"]
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c"]
# /proc/cpuinfo flags the 512-bit kernels need (vpermt2b is VBMI), and the optional VNNI.
AVX512_NEEDS = {"avx512f": "-mavx512f", "avx512bw": "-mavx512bw", "avx512vl": "-mavx512vl",
                "avx512dq": "-mavx512dq", "avx512vbmi": "-mavx512vbmi"}
AVX512_VNNI = ("avx512_vnni", "-mavx512vnni")
# Rows up to which ours serve, per torch capability: both kernels' cost grows with rows. AVX2:
# measured to 16 (gate_up 4096 x 640 ~2.6x torch's at 1 row). AVX512 (bench/quant_crossover.py,
# one decoder layer, 1 thread, under load): at 24 rows ours int4 0.95 vs torch's 3.39 ms, int8
# 3.15 vs 4.03; to 64 rows int4 stays 3-4x under the dequantize + GEMM path (2.6 vs 8.6 ms).
MAX_ROWS = {"AVX2": 16, "AVX512": 64}
DTYPES = (torch.bfloat16, torch.float32)
# Where ours are the default: torch's CPU capabilities they were measured faster on (bench/
# quant_kernels_ab.py, Gemma 3 270M shapes, 1-16 rows, 1 thread; AVX2: 1.5-5x; AVX512 (Zen 4, VNNI,
# 2026-12-03, under load): int4 1.5-3.2x, int8 1.1-2.1x torch's).
DEFAULT_CAPABILITIES = ("AVX2", "AVX512")
enabled = os.environ.get("TUNELAB_QUANT_KERNELS", "1") != "0"  # benches flip it for A/B in one process


def cache_dir() -> Path:
    """The build cache, per machine rather than per store: tests give every test its own
    $TUNELAB_HOME, and the compile must be paid once."""
    return Path(os.environ.get("TUNELAB_KERNEL_CACHE") or Path.home() / ".cache" / "tunelab" / "kernels")


@functools.cache
def flags() -> list[str]:
    """Compiler flags for this CPU: AVX2, plus AVX-512 where it has every one of `AVX512_NEEDS`."""
    cpu = cpu_flags()
    if not set(AVX512_NEEDS) <= cpu:
        return list(FLAGS)
    return FLAGS + list(AVX512_NEEDS.values()) + ([AVX512_VNNI[1]] if AVX512_VNNI[0] in cpu else [])


@functools.cache
def ops():
    """The loaded `torch.ops.tunelab_quant` (compiled on first use), or None where it cannot be."""
    if platform.machine().lower() not in ("x86_64", "amd64") or \
            torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils.cpp_extension import load

    sources = b"".join(p.read_bytes() for p in [*SOURCES, CSRC / "quant_gemv.h"])
    key = hashlib.sha256(sources + f"{torch.__version__} {flags()}".encode()).hexdigest()[:12]
    name = f"tunelab_quant_{key}"
    build = cache_dir() / name
    try:
        build.mkdir(parents=True, exist_ok=True)
        load(name=name, sources=[str(p) for p in SOURCES], extra_cflags=flags(), build_directory=str(build),
             is_python_module=False, verbose=False)
    except Exception as err:  # no compiler, no ninja, a failed build: torch's kernels serve instead
        log.warning("quantized linears use torch's kernels: building %s failed (%s)", CSRC.name,
                    str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__)
        return None
    return torch.ops.tunelab_quant


def active() -> bool:
    """Whether the quantized linears take our kernels here (enabled, measured on this CPU, built)."""
    return enabled and _default_here()


@functools.cache
def _default_here() -> bool:
    return torch.backends.cpu.get_cpu_capability() in DEFAULT_CAPABILITIES and ops() is not None


@functools.cache
def wide() -> bool:
    """Whether the int8 kernel takes 512-bit vectors: built with them and torch runs AVX512 here
    (ATEN_CPU_CAPABILITY=avx2 keeps both sides on AVX2)."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and ops().vector_bits() == 512


def int4_blocks() -> tuple[int, ...]:
    """torch's int4 packings (rows per block) this build reads."""
    return (32, 64) if ops() is not None and ops().vector_bits() == 512 else (32,)


@functools.cache
def _max_rows() -> int:
    return MAX_ROWS.get(torch.backends.cpu.get_cpu_capability(), 0)


def _fits(x: torch.Tensor, scales: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dim() == 2 and x.shape[0] <= _max_rows() and x.dtype in DTYPES
            and scales.dtype == x.dtype and x.shape[1] % 32 == 0 and active())


def int8(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor | None:
    """x (T, K) @ (weight (N, K) int8 * scales (N,)).T -> (T, N) in x's dtype, or None where ours do not apply."""
    if not _fits(x, scales):
        return None
    return ops().int8_gemv(x.contiguous(), weight, scales, wide())


def int4(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor | None:
    """x (T, K) against torch's int4 packing of a weight (N, K/2) with (K/group, N, 2) scales and
    zeros -> (T, N) in x's dtype, or None where ours do not apply."""
    block = int4_pack_block()
    if not _fits(x, scales_zeros) or block not in int4_blocks() or packed.shape[0] % block or group % 32:
        return None
    return ops().int4_gemv(x.contiguous(), packed, scales_zeros, group, block)
