"""Fused CPU ops for the small steps of a decode step (`csrc/decode_ops.cpp`), and when to take them.

A one-row decode step is bound by per-op overhead, not flops: torch's CPU `rms_norm` is seven ops
(~36 us a row), and a Gemma 3 270M step runs 91 of them. Each op here is one call that repeats
torch's arithmetic in torch's order, so it returns the torch path's results bit for bit:

    rms_norm       x -> x * rsqrt(mean(x^2) + eps) * g           (RMSNorm.forward)
    residual_norm  x, h -> s = x + [norm(h)], norm(s)             (a layer's residual add + next norm)
    norm_rotary    qk -> rotary(norm(qk) per head)                (layers.head_norm_rotary)
    gated_act      gate_up -> act(gate) * up                      (GatedMLP, gelu_tanh or silu)

`usable` says where: CPU, no autograd (training takes torch's path, unchanged), fp32 or bf16,
contiguous rows, and the kernel extension built; `act_usable` narrows `gated_act` to bf16. `enabled` (env TUNELAB_DECODE_OPS=0 turns it
off) is the switch tests and benches flip for A/B in one process.
"""

from __future__ import annotations

import functools
import os

import torch

from tunelab.models import quant_kernels

enabled = os.environ.get("TUNELAB_DECODE_OPS", "1") != "0"
DTYPES = (torch.float32, torch.bfloat16)
ACTS = {"silu": False, "gelu_tanh": True}  # act name -> the op's `gelu` flag


@functools.cache
def _lanes() -> int:
    """fp32 lanes of torch's Vectorized here: its activations call Sleef at this width."""
    return 16 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 8


@functools.cache
def _built() -> bool:
    ops = quant_kernels.ops()
    return ops is not None and hasattr(ops, "rms_norm")


def usable(*xs: torch.Tensor) -> bool:
    """Whether the fused ops may replace torch's for these inputs (each last dim contiguous)."""
    if not enabled or torch.is_grad_enabled():
        return False
    return all(x.device.type == "cpu" and x.dtype in DTYPES and x.stride(-1) == 1 for x in xs) and _built()


def act_usable(gate_up: torch.Tensor) -> bool:
    """Whether `gated_act` matches torch here: bf16 (fp32 activations round unlike torch's), rows
    of whole vector steps (torch's scalar tail uses libm), and the Sleef width built."""
    return (gate_up.dtype == torch.bfloat16 and gate_up.dim() == 2 and gate_up.shape[1] % (8 * _lanes()) == 0
            and usable(gate_up) and (_lanes() == 8 or quant_kernels.ops().vector_bits() == 512))


def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float, gain_fp32: bool) -> torch.Tensor:
    """x (..., D) normed; gain (D,) fp32 applied before the cast (gain_fp32) or in x's dtype after it."""
    rows = x.reshape(-1, x.shape[-1])
    return quant_kernels.ops().rms_norm(rows, gain, eps, gain_fp32).view(x.shape)


def residual_norm(x: torch.Tensor, h: torch.Tensor, post: torch.Tensor | None, nxt: torch.Tensor | None,
                  eps: float, gain_fp32: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(s, norm(s, nxt)) with s = x + norm(h, post) (x + h without post); x, h (T, D). None without nxt."""
    s, y = quant_kernels.ops().residual_norm(x, h, post, nxt, eps, gain_fp32)
    return s, (y if nxt is not None else None)


def norm_rotary(qk: torch.Tensor, gain: torch.Tensor, eps: float, gain_fp32: bool,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """qk (T, H, D) -> per-head norm with gain (H, D), then rotary by rope = (cos, sin) (T, 1, D)."""
    cos, sin = rope
    return quant_kernels.ops().norm_rotary(qk, gain, eps, gain_fp32, cos.contiguous(), sin.contiguous())


def gated_act(gate_up: torch.Tensor, act: str) -> torch.Tensor:
    """gate_up (T, 2I) bf16 -> act(gate) * up (T, I); act one of ACTS; where `act_usable`."""
    return quant_kernels.ops().gated_act(gate_up, ACTS[act], _lanes())
