"""Building blocks shared by the model families: norms, rotary embedding, fused linears, MLP.

Fused projections (q/k/v into `qkv_proj`, gate/up into `gate_up_proj`) halve the number of
matmuls per layer, which matters on CPU where each call has a fixed overhead. Each fused
linear knows the output slice of every checkpoint tensor it absorbs (`slices`), which the
loader and the LoRA layer both use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32. `offset=1` gives Gemma's (1 + w) scaling with zero-initialised w."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma scales in fp32 before casting back
            return (h * (self.offset + self.weight.float())).to(dtype)
        return self.weight * h.to(dtype)


class Linear(nn.Linear):
    """nn.Linear that routes single-row bf16/fp16 CPU inputs through `torch.mv`.

    A decode step of one sequence is a matrix-vector product; on CPU the bf16 GEMM path
    is 1.5-4x slower for it than `mv` (measured on AVX512-BF16), and it dominates step time.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and x.dim() == 2 and x.dtype != torch.float32 and not x.is_cuda:
            y = torch.mv(self.weight, x[0])
            return (y if self.bias is None else y + self.bias).unsqueeze(0)
        return F.linear(x, self.weight, self.bias)


class FusedLinear(Linear):
    """One nn.Linear whose output concatenates several checkpoint projections (`slices`)."""

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool = False):
        super().__init__(in_features, sum(parts.values()), bias=bias)
        self.slices: dict[str, slice] = {}
        start = 0
        for name, size in parts.items():
            self.slices[name] = slice(start, start + size)
            start += size

    def load_part(self, part: str, tensor: torch.Tensor, is_bias: bool = False) -> None:
        """Copy one checkpoint tensor (e.g. 'q_proj' weight) into its slice of the fused weight."""
        target = self.bias if is_bias else self.weight
        target.data[self.slices[part]].copy_(tensor)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up fused into one matmul."""

    def __init__(self, hidden: int, inter: int, act: str, bias: bool = False):
        super().__init__()
        self.gate_up_proj = FusedLinear(hidden, {"gate_proj": inter, "up_proj": inter}, bias)
        self.down_proj = Linear(inter, hidden, bias=bias)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (T, inter) each
        return self.down_proj(self.act(gate) * up)


def _activation(name: str):
    if name in ("silu", "swish"):
        return F.silu
    if name in ("gelu_pytorch_tanh", "gelu_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unsupported activation '{name}'")


class Rotary:
    """Rotary position embedding (rotate-half layout) from a precomputed inverse-frequency table.

    A plain object rather than a module: its fp32 tables must not follow `model.to(bf16)`.
    """

    def __init__(self, inv_freq: torch.Tensor, max_positions: int, attention_scaling: float = 1.0):
        t = torch.arange(max_positions, dtype=torch.float32, device="cpu")
        freqs = torch.outer(t, inv_freq.float())  # (P, D/2)
        self.cos = freqs.cos() * attention_scaling
        self.sin = freqs.sin() * attention_scaling

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (T, heads, D), positions: (T,) -> x rotated, same dtype."""
        cos = self.cos[positions].unsqueeze(1)  # (T, 1, D/2)
        sin = self.sin[positions].unsqueeze(1)
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return out.to(x.dtype)


def rope_inv_freq(config, head_dim: int, layer_type: str | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention scaling for a (possibly per-layer-type) rope config.

    Default rope is computed here; scaled variants (linear, llama3, yarn, ...) reuse transformers'
    reference init functions so their maths stays exactly the upstream one.
    """
    params = config.rope_parameters or {}
    if layer_type is not None and layer_type in params:
        params = params[layer_type]
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        base = params.get("rope_theta", 10000.0)
        return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim)), 1.0
    if rope_type == "dynamic":
        raise ValueError("rope_type 'dynamic' changes with sequence length and is not supported")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    kwargs = {"layer_type": layer_type} if layer_type in (config.rope_parameters or {}) else {}
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"), **kwargs)
    return inv_freq, float(scaling)
