"""The one rule for dtype names and for what "auto" means, for training and the engine.

auto = bf16 where the device computes it natively, else fp32:
- CUDA: bf16 unless the GPU says it has none (`torch.cuda.is_bf16_supported`);
- CPU, inference: bf16 on CPUs with AVX512-BF16 or AMX (half the bytes read per token,
  without the emulation penalty older CPUs pay), else fp32;
- CPU, training: bf16 on a bf16 CPU when the base is frozen and the trainable weights stay
  fp32 (LoRA/DoRA: peft upcasts adapter weights, so updates and AdamW state are fp32 while the
  frozen base's matmuls run in bf16, 1.6x faster per step on Gemma 3 270M, docs/benchmarks.md);
  fp32 otherwise (full/freeze would take their updates in bf16 weights).

Importing this module does not import torch (the memory planner asks `auto_dtype_name`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunelab.errors import TunelabError

if TYPE_CHECKING:
    import torch

# every spelling users write (HF's torch_dtype names, our config names) -> canonical name
NAMES = {
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
}


def auto_dtype_name(kind: str, training: bool = False, frozen_base: bool = False) -> str:
    """What "auto" means on a device kind ("cuda" or "cpu"): "bf16" or "fp32".

    `frozen_base`: training keeps the base frozen and its trainable weights in fp32 (LoRA/DoRA).
    """
    if kind == "cuda":
        return "bf16" if _cuda_has_bf16() else "fp32"
    return "bf16" if (not training or frozen_base) and cpu_has_fast_bf16() else "fp32"


def resolve_dtype(name: str | torch.dtype, device: str | torch.device, training: bool = False,
                  frozen_base: bool = False) -> torch.dtype:
    """A dtype name ('auto', 'bf16', 'bfloat16', 'fp16', 'fp32', ...) for `device` -> torch dtype."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    kind = torch.device(device).type
    canonical = auto_dtype_name(kind, training, frozen_base) if name == "auto" else NAMES.get(str(name))
    if canonical is None:
        raise TunelabError(f"dtype: '{name}' is not one of auto, bf16, fp16, fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[canonical]


def _cuda_has_bf16() -> bool:
    """False only when a GPU is present and lacks bf16 (a planned, absent GPU is assumed to have it)."""
    import torch

    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split()[2:])
    except OSError:
        return frozenset()
