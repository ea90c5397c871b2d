"""Building blocks shared by the model families: norms, rotary embedding, fused linears, MLP.

Fused projections (q/k/v into `qkv_proj`, gate/up into `gate_up_proj`) halve the number of
matmuls per layer, which matters on CPU where each call has a fixed overhead. Each fused
linear knows the output slice of every checkpoint tensor it absorbs (`slices`), which the
loader and the LoRA layer both use.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.models import decode_ops

if TYPE_CHECKING:
    from tunelab.models.quant import QuantSpec, QuantWeight

PACKED_ROWS = 64  # inputs of up to this many rows take a packed weight (`Linear.pack`); decode steps


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32. `offset=1` gives Gemma's (1 + w) scaling with zero-initialised w."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps = eps
        self.offset = offset
        self._cached: tuple | None = None  # (weight key, gain) -- see `gain`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = self.fused_gain(x)
        if gain is not None:  # one fused op, bitwise equal to the torch path below
            return decode_ops.rms_norm(x, gain, self.eps, bool(self.offset))
        # F.rms_norm: one call for x * rsqrt(mean(x^2) + eps) * g, bitwise equal to the op-by-op form
        if self.offset:  # Gemma scales in fp32 before casting back
            return F.rms_norm(x.float(), (x.shape[-1],), self.gain(), self.eps).to(x.dtype)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def fused_gain(self, x: torch.Tensor) -> torch.Tensor | None:
        """The gain `decode_ops` takes for input x (fp32 with an offset, else the weight in x's
        dtype), or None where x takes the torch path (autograd, another device or dtype)."""
        if not decode_ops.usable(x):
            return None
        gain = self.gain()
        return gain if self.offset or gain.dtype == x.dtype else None

    def gain(self) -> torch.Tensor:
        """The factor the norm applies: offset + w in fp32 (Gemma), else w itself.

        Without autograd (offset + w) is cached: a decode step runs ~100 norms of one row, where
        building it costs as much as the norm. `weight_key` tells when to rebuild it.
        """
        if not self.offset:
            return self.weight
        key = self.weight_key()
        if key is None:
            return self.offset + self.weight.float()
        if self._cached is None or self._cached[0] != key:
            with torch.inference_mode(False):  # a normal tensor, usable outside inference mode too
                self._cached = (key, self.offset + self.weight.detach().float())
        return self._cached[1]

    def weight_key(self) -> tuple | None:
        """Changes when the weight may have, or None where no cache may be used.

        It sees re-assignment (pointer), casts, and in-place writes to the parameter (version);
        `.to()` drops the caches (`_apply`). A write through `.data` bypasses the version
        counter: the loader writes that way, but before the first forward and before `.to()`.
        None: autograd is on (the gain must stay in the graph) or the weight is an inference
        tensor (it has no version counter).
        """
        w = self.weight
        if torch.is_grad_enabled() or w.is_inference():
            return None
        return w.data_ptr(), w._version, w.dtype, w.device

    def _apply(self, fn, recurse: bool = True):
        self._cached = None
        return super()._apply(fn, recurse)


def add_norm(x: torch.Tensor, h: torch.Tensor, post: RMSNorm | None,
             nxt: RMSNorm | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A decoder layer's residual add and the norm after it: s = x + post(h) (x + h without
    `post`), and nxt(s) (None without `nxt`). One fused op where `decode_ops` serves x."""
    fused = _add_norm_args(x, h, post, nxt)
    if fused is not None:
        return decode_ops.residual_norm(x, h, *fused)
    s = x + (post(h) if post is not None else h)
    return s, (nxt(s) if nxt is not None else None)


def _add_norm_args(x, h, post: RMSNorm | None, nxt: RMSNorm | None) -> tuple | None:
    """(post gain, next gain, eps, offset) for `decode_ops.residual_norm`, or None: torch's path."""
    norms = [n for n in (post, nxt) if n is not None]
    if not norms or h.shape != x.shape or h.dtype != x.dtype or x.dim() != 2 or not decode_ops.usable(h) \
            or len({(n.eps, bool(n.offset)) for n in norms}) != 1:
        return None
    gains = [n.fused_gain(x) if n is not None else None for n in (post, nxt)]
    if any(g is None for g, n in zip(gains, (post, nxt)) if n is not None):
        return None
    return gains[0], gains[1], norms[0].eps, bool(norms[0].offset)


def head_norm_rotary(qk: torch.Tensor, gain: torch.Tensor, eps: float, offset: float,
                     rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per-head q/k RMSNorm then rotary, for q and k heads stacked in one tensor.

    qk: (T, Hq + Hkv, D); gain: (Hq + Hkv, D), each head's norm factor (`RMSNorm.gain`).
    Same maths and roundings as norming and rotating q and k apart, in a quarter of the
    kernel launches (a one-token decode step is bound by launches, not flops).
    """
    if decode_ops.usable(qk, gain, *rope) and (offset or gain.dtype == qk.dtype) and qk.dim() == 3 \
            and qk.stride(1) == qk.shape[2] and rope[0].dtype == rope[1].dtype == torch.float32:
        return decode_ops.norm_rotary(qk, gain.contiguous(), eps, bool(offset), rope)  # one op, same bits
    h = F.rms_norm(qk.float(), (qk.shape[-1],), eps=eps)  # (T, H, D) fp32
    qk = (h * gain).to(qk.dtype) if offset else h.to(qk.dtype) * gain
    return apply_rotary(qk, rope)


class Linear(nn.Linear):
    """nn.Linear that routes single-row bf16/fp16 CPU inputs through `torch.mv` where that is faster.

    A decode step of one sequence is a matrix-vector product, and it dominates step time
    (`dense`: which CPUs take `mv`, which the GEMM path).
    """

    qweight: "QuantWeight | None" = None  # set by `quantize`; then the dense weight is gone
    packed: tuple | None = None  # (weight key, oneDNN-packed weight) for inputs of few rows: `pack`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qweight is not None:
            y = self.qweight.matmul(x)
            return y if self.bias is None else y + self.bias
        packed = self._packed_for(x)
        if packed is not None:  # the same oneDNN product as F.linear, minus its per-call weight reorder
            return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")
        return dense(x, self.weight, self.bias)

    def pack(self) -> int:
        """Keep a oneDNN-packed copy of the weight for inputs of up to PACKED_ROWS rows where
        `packing_pays`; the bytes it takes (0: none).

        `F.linear` reorders a bf16 weight on every call; the packed product gives the same outputs
        bit for bit (1-512 rows, 6 shapes). AVX512-BF16 EPYC, 1 thread, plain -> packed: Gemma 3
        lm_head 1 row 49 -> 24 ms; gate_up 1 row 0.34 -> 0.14, 16 rows 0.91 -> 0.59, 64 rows
        2.50 -> 2.09, 512 rows 14.3 -> 14.9 ms (so prefill chunks keep the plain product)."""
        if self.qweight is not None or not packing_pays(self.weight):
            return 0
        weight = self.weight.detach()
        self.packed = (tensor_key(weight), torch.ops.mkldnn._reorder_linear_weight(weight, 1))
        return weight.numel() * weight.element_size()

    def _packed_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The packed weight if `x` is rows it serves and the weight is unchanged since `pack`."""
        if self.packed is None or x.dim() != 2 or x.shape[0] > PACKED_ROWS or x.dtype != self.weight.dtype \
                or torch.is_grad_enabled():
            return None
        key, packed = self.packed
        if key != tensor_key(self.weight):  # rewritten in place or replaced (a merge, a weight sync): stale
            self.packed = None
            return None
        return packed

    def _apply(self, fn, recurse: bool = True):
        self.packed = None  # `.to()` and friends make a new weight
        return super()._apply(fn, recurse)

    def quantize(self, spec: "QuantSpec") -> None:
        """Replace the dense weight by a weight-only quantized copy (a tied weight is untied:
        the embedding that shared it keeps its exact values)."""
        from tunelab.models.quant import QuantWeight

        self.use_quantized(QuantWeight.from_dense(self.weight.detach(), spec))

    def use_quantized(self, qweight) -> None:
        """Run on `qweight` (a `models.quant` weight of this layer's shape) instead of the dense weight."""
        self.qweight = qweight
        del self.weight

    def __getattr__(self, name: str):
        # LoRA/DoRA read `.weight` (dtype, row norms): hand them the dequantized values.
        if name == "weight" and self.__dict__.get("qweight") is not None:
            return self.__dict__["qweight"].dequantize()
        return super().__getattr__(name)


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, in) @ weight (out, in).T (+ bias), as every dense `Linear` computes it.

    One bf16/fp16 CPU row goes through `torch.mv` where `_mv_is_faster`; else `F.linear`.
    Both give the same bf16 outputs on AVX512-BF16 (Gemma 3 head, 6 rows: 0 of 1.6M differ)."""
    if x.shape[0] == 1 and x.dim() == 2 and x.dtype != torch.float32 and not x.is_cuda and _mv_is_faster(x.dtype):
        y = torch.mv(weight, x[0])
        return (y if bias is None else y + bias).unsqueeze(0)
    return F.linear(x, weight, bias)


def packing_pays(weight: torch.Tensor) -> bool:
    """Whether a oneDNN-packed copy speeds few-row products of `weight`: bf16 on an AVX512-BF16 CPU
    without AMX, where it is measured (elsewhere single rows take `mv`, `_mv_is_faster`)."""
    return weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and not _mv_is_faster(weight.dtype) \
        and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack_linears(model: nn.Module) -> int:
    """`Linear.pack` every dense linear of `model`; the bytes the packed copies take."""
    return sum(m.pack() for m in model.modules() if isinstance(m, Linear))


def tensor_key(weight: torch.Tensor) -> tuple:
    """Changes when the weight may have (an inference tensor has no version counter: never written);
    the key of the copies kept beside a weight: `Linear.pack`, engine/greedy_head."""
    return weight.data_ptr(), weight.dtype, None if weight.is_inference() else weight._version


@functools.cache
def _mv_is_faster(dtype: torch.dtype) -> bool:
    """Whether one row is faster through `mv` than through the GEMM path: fp16 always (its CPU GEMM
    is emulated), bf16 except on AVX512-BF16 CPUs without AMX. mv was 1.5-4x faster on an AMX
    CPU (2026-11-22); on an AVX512-BF16 EPYC (torch 2.13, 1 thread) it is 2-3.5x slower: Gemma 3
    lm_head 64 vs 40 ms, gate_up 0.61 vs 0.30 ms, down 0.71 vs 0.19 ms."""
    from tunelab.dtypes import cpu_flags

    flags = cpu_flags()
    return dtype != torch.bfloat16 or "avx512_bf16" not in flags or "amx_bf16" in flags


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
        self.act_name = _ACT_NAMES.get(act)  # its name in decode_ops.ACTS, None where it has none

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (T, 2 inter)
        if self.act_name is not None and decode_ops.act_usable(gate_up):
            return self.down_proj(decode_ops.gated_act(gate_up, self.act_name))  # one op, same bits
        gate, up = gate_up.chunk(2, dim=-1)  # (T, inter) each
        return self.down_proj(self.act(gate) * up)


_ACT_NAMES = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


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

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin (T, 1, D) for positions (T,); gathered once per step, shared by every layer.

        Full-width tables with sin negated on the first half turn rotate-half into one roll:
        x * cos + roll(x) * sin = (x1 cos - x2 sin, x2 cos + x1 sin), exactly.
        """
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D/2)
        return torch.cat((cos, cos), -1).unsqueeze(1), torch.cat((-sin, sin), -1).unsqueeze(1)


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: (T, heads, D) rotated by `rope` = Rotary.at(positions), computed in fp32, same dtype out."""
    cos, sin = rope
    h = x.float()
    return (h * cos + h.roll(h.shape[-1] // 2, -1) * sin).to(x.dtype)


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
