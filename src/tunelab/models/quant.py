"""Weight-only quantization (int8 per output channel, int4 per group of inputs) and its matmul.

torch's CPU kernels for these formats (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`)
are matrix-vector kernels: their cost grows linearly with the rows of the input. They win for
a decode step of a few sequences; past `CROSSOVER` rows (measured on an AVX512-BF16 CPU with
`bench/quant_crossover.py`) the weight is instead dequantized tile by tile into one reused
scratch buffer and multiplied with the dense GEMM, whose cost barely grows with rows:

    x (M, K) --M < crossover--> kernel(x, packed)                           -> (M, N)
             --otherwise------> for each tile of rows: W_t = dequant(tile)   (K, n) in scratch
                                                       y[:, tile] = x @ W_t  -> (M, N)

Tiles keep the scratch small (`TILE_BYTES`) and hot in cache; the full dense weight never exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.models import quant_kernels
from tunelab.models.quant_fit import FIT_ROWS, fit_int4
from tunelab.models.quant_layout import int4_pack_block, scratch, unpack_int4

_QUANT_FORM = re.compile(r"^(int8|int4)(?:-g(32|64|128|256))?(-all)?$")
INT4_DEFAULT_GROUP = 32  # fastest of 32/64/128 for the 262k x 640 Gemma lm_head here, and the most exact
# Rows from which dequantize + GEMM beats the kernel (bench/quant_crossover.py, Gemma 3 270M shapes,
# one thread, under load). torch's kernels (2026-12-02): int8 from 8 (lm_head) / 24 (decoder layer)
# rows; int4 from 48 (decoder layer) / 128 (lm_head): unpacking nibbles in eager torch costs ~1-3 ns
# per weight. Ours on AVX512 (quant_kernels, 2026-12-03): int8 from 24 (layer: 3.9 vs 3.9 ms) / 32
# (lm_head); int4 never up to 64 rows (layer 2.6 vs 17 ms, lm_head 95 vs 515 ms).
CROSSOVER = {"int8": 24, "int4": 64}
TILE_BYTES = 4 << 20  # dequantized weight per tile: fits the L2 + L3 share of a core
_INT4_BLOCK = 64  # tiles and joins cut the int4 weight at multiples of 64 rows (whole packing blocks, see below)


@dataclass(frozen=True)
class QuantSpec:
    """Parsed `quantize` option: scheme, int4 group size, and whether decoder linears are included."""

    scheme: str  # "int8" (per output channel) or "int4" (asymmetric, per group of inputs)
    group_size: int
    all_linears: bool

    @classmethod
    def parse(cls, value: str | None) -> "QuantSpec | None":
        """'int8' | 'int4' | 'int4-g64' | 'int8-all' | 'int4-g128-all' | None -> spec or None."""
        if value is None:
            return None
        m = _QUANT_FORM.match(str(value))
        if not m or (m.group(1) == "int8" and m.group(2)):
            raise ConfigError(f"quantize: '{value}' is not one of int8, int4, int4-gN (N = 32, 64, 128, 256), "
                              "optionally followed by -all (also the decoder linears), or None")
        return cls(m.group(1), int(m.group(2) or INT4_DEFAULT_GROUP), bool(m.group(3)))


class QuantWeight:
    """A weight-only quantized (out, in) matrix: the kernel for few rows, tiled dequant + GEMM for many.

    int8: symmetric per output row, w = q * s (`torch._weight_int8pack_mm`).
    int4: asymmetric per group of `group_size` inputs, w = (q - 8) * scale + zero, packed for
    `torch._weight_int4pack_mm_for_cpu` (the only int4 kernel with a CPU implementation).
    """

    def __init__(self, spec: QuantSpec, shape: tuple[int, int], data: torch.Tensor, scales: torch.Tensor):
        self.spec, self.shape, self.data, self.scales = spec, shape, data, scales
        self._int4_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # (scale, zero - 8 scale), lazily

    @classmethod
    def from_dense(cls, w: torch.Tensor, spec: QuantSpec) -> "QuantWeight":
        """Quantize `w` (out, in) keeping its device; activations must later come in `w.dtype`."""
        out_f, in_f = w.shape
        if spec.scheme == "int4" and w.device.type != "cpu":
            raise ConfigError(f"quantize: int4 has a kernel only on CPU in this torch build, not on "
                              f"'{w.device}'; use int8 or quantize=None")
        if spec.scheme == "int4" and in_f % spec.group_size:
            raise ConfigError(f"quantize: input size {in_f} is not a multiple of the int4 group size "
                              f"{spec.group_size}; pick another -gN")
        maker = _int8 if spec.scheme == "int8" else _int4
        q = cls(spec, (out_f, in_f), *maker(w.float(), spec.group_size, w.dtype))
        q._check_kernel(w.dtype, w.device)
        return q

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                   dtype: torch.dtype) -> "QuantWeight":
        """Integer codes that are already chosen (a GGUF's blocks): w = scale * q - offset per group.

        codes: (out, in) in 0..15; scale, offset: (out, groups) fp32, groups of 32..256 inputs (the
        int4 kernel's). Signed 8-bit codes go through `QuantSum.nibbles`: torch's int8 kernel
        scales whole rows only.
        """
        out_f, in_f = codes.shape
        group = in_f // scale.shape[1]
        zero = 8 * scale - offset  # the kernel computes (q - 8) * scale + zero
        scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)  # (groups, out, 2)
        q = cls(QuantSpec("int4", group, True), (out_f, in_f),
                torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1), scales_zeros)
        q._int4_affine = (scale.t().contiguous().to(dtype), (-offset).t().contiguous().to(dtype))  # exact shift
        return q

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, in) -> (T, out) in x's dtype; the path is chosen by T (see `CROSSOVER`)."""
        if x.shape[0] >= CROSSOVER[self.spec.scheme] and self.tileable:
            return self._tiled_matmul(x)
        return self.kernel(x)

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, in) -> (T, out) through a matrix-vector kernel: ours (`quant_kernels`) where they
        apply, else torch's."""
        if self.spec.scheme == "int8":
            y = quant_kernels.int8(x, self.data, self.scales)
            return torch._weight_int8pack_mm(x, self.data, self.scales) if y is None else y
        y = quant_kernels.int4(x, self.data, self.scales, self.spec.group_size)
        return torch._weight_int4pack_mm_for_cpu(x, self.data, self.spec.group_size, self.scales) if y is None else y

    @property
    def tileable(self) -> bool:
        """The dequantize path knows the int4 packing only for whole 64-row blocks (every real vocab)
        of a layout it recognises."""
        return self.spec.scheme == "int8" or (self.shape[0] % _INT4_BLOCK == 0 and int4_pack_block() > 0)

    def dequantize(self) -> torch.Tensor:
        """The dense (out, in) matrix (for LoRA/DoRA and tests)."""
        if not self.tileable:  # the kernel applied to the identity
            eye = torch.eye(self.shape[1], dtype=self.scales.dtype, device=self.scales.device)
            return self.kernel(eye).T.contiguous()
        n, k = self.shape
        w = self._tile(0, n, torch.empty(n * k, dtype=self.scales.dtype, device=self.scales.device)).T  # (N, K)
        return w * self.scales[:, None] if self.spec.scheme == "int8" else w.contiguous()

    def _tiled_matmul(self, x: torch.Tensor) -> torch.Tensor:
        n_out, k = self.shape
        rows = max(_INT4_BLOCK, TILE_BYTES // (k * x.element_size()) // _INT4_BLOCK * _INT4_BLOCK)
        buf = scratch(min(rows, n_out) * k, x.dtype, x.device)
        out = torch.empty(x.shape[0], n_out, dtype=x.dtype, device=x.device)  # (T, N)
        for n0 in range(0, n_out, rows):
            n = min(rows, n_out - n0)
            torch.mm(x, self._tile(n0, n, buf), out=out[:, n0:n0 + n])  # (T, K) @ (K, n)
        if self.spec.scheme == "int8":
            out.mul_(self.scales)  # per output channel: scaling y is cheaper than scaling W
        return out

    def _tile(self, n0: int, n: int, scratch: torch.Tensor) -> torch.Tensor:
        """Output rows [n0, n0 + n) as a (K, n) matrix in `scratch` (int8: unscaled q)."""
        k = self.shape[1]
        w = scratch[:n * k]
        if self.spec.scheme == "int8":
            return w.view(n, k).copy_(self.data[n0:n0 + n]).T  # (K, n), a transposed view
        w = w.view(k, n)
        unpack_int4(self.data[n0:n0 + n], w)
        scale, shift = self._affine(w.dtype)
        g = self.spec.group_size
        v = w.view(k // g, g, n)  # (groups, g, n)
        return torch.addcmul(shift[:, None, n0:n0 + n], v, scale[:, None, n0:n0 + n], out=v).view(k, n)

    def _affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(groups, N) scale and zero - 8 * scale (= the group's minimum), in fp32 before rounding."""
        if self._int4_affine is None or self._int4_affine[0].dtype != dtype:
            s, z = self.scales[..., 0].float(), self.scales[..., 1].float()
            self._int4_affine = (s.to(dtype), (z - 8 * s).to(dtype))
        return self._int4_affine

    def _check_kernel(self, dtype: torch.dtype, device: torch.device) -> None:
        try:
            self.kernel(torch.zeros(1, self.shape[1], dtype=dtype, device=device))
        except (RuntimeError, NotImplementedError) as err:
            raise ConfigError(f"quantize: {self.spec.scheme} is not supported for {dtype} on '{device}' "
                              f"by this torch build ({str(err).splitlines()[0][:120]})") from None


class QuantSum:
    """Quantized matrices of one shape whose products add up: an 8-bit code split into two 4-bit
    planes, q = 16 * hi + lo, keeps torch's int4 kernel for a GGUF's Q8_0 / Q5_0 blocks (8 bits a
    weight, like int8, but int8's kernel has no per-group scales)."""

    def __init__(self, terms: list):
        self.terms, self.shape = terms, terms[0].shape

    @classmethod
    def nibbles(cls, codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> "QuantSum":
        """codes (out, in) in -128..127, scale (out, groups of 32 or 16) fp32: w = scale * codes, exactly.

        Groups of 16 (Q6_K), which the int4 kernel cannot scale, become two sums over groups of 32:
        one keeps the even sixteens (the odd ones coded 0), the other the odd ones."""
        out_f, in_f = codes.shape
        if in_f // scale.shape[1] == 16:
            halves = codes.view(out_f, in_f // 32, 2, 16)
            parts = [torch.where(torch.arange(2).view(1, 1, 2, 1) == p, halves, 0).view(out_f, in_f) for p in (0, 1)]
            return cls([t for p in (0, 1) for t in cls.nibbles(parts[p], scale[:, p::2], dtype).terms])
        codes = codes.to(torch.int16)
        lo, hi = codes & 15, (codes >> 4) + 8  # hi in 0..15 stands for hi - 8; a 0 code gives 0 exactly
        return cls([QuantWeight.from_codes(lo, scale, torch.zeros_like(scale), dtype),
                    QuantWeight.from_codes(hi, 16 * scale, 128 * scale, dtype)])

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, in) -> (T, out), the sum of each term's product."""
        y = self.terms[0].matmul(x)
        for term in self.terms[1:]:
            y += term.matmul(x)
        return y

    def dequantize(self) -> torch.Tensor:
        """The dense (out, in) matrix."""
        return sum(t.dequantize().float() for t in self.terms).to(self.terms[0].scales.dtype)


class QuantRows:
    """Quantized matrices stacked along outputs: a fused q/k/v whose parts a GGUF stores in
    different formats (Q4_K queries, Q6_K values)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, in) -> (T, out), each part's rows in order."""
        return torch.cat([p.matmul(x) for p in self.parts], dim=1)

    def dequantize(self) -> torch.Tensor:
        """The dense (out, in) matrix."""
        return torch.cat([p.dequantize() for p in self.parts], dim=0)


def stack_rows(parts: list):
    """One quantized matrix holding `parts` (same input size) one after another along outputs:
    a single QuantWeight when their formats allow (one call per step), else a QuantRows."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if all(isinstance(p, QuantSum) and len(p.terms) == len(first.terms) for p in parts):
        return QuantSum([stack_rows([p.terms[i] for p in parts]) for i in range(len(first.terms))])
    if all(_joinable(first, p) for p in parts):
        return _join(parts)
    return QuantRows(parts)


def _joinable(a, b) -> bool:
    if not (isinstance(a, QuantWeight) and isinstance(b, QuantWeight)):
        return False
    same = a.spec == b.spec and a.shape[1] == b.shape[1]
    blocks = a.spec.scheme == "int8" or (a.shape[0] % _INT4_BLOCK == 0 and b.shape[0] % _INT4_BLOCK == 0)
    return same and blocks and a.scales.dtype == b.scales.dtype


def _join(parts: list[QuantWeight]) -> QuantWeight:
    first = parts[0]
    out = QuantWeight(first.spec, (sum(p.shape[0] for p in parts), first.shape[1]),
                      torch.cat([p.data for p in parts]),  # int4: whole 64-row blocks, so rows simply follow
                      torch.cat([p.scales for p in parts], dim=1 if first.spec.scheme == "int4" else 0))
    affines = [p._int4_affine for p in parts]
    if first.spec.scheme == "int4" and all(a is not None for a in affines):
        out._int4_affine = (torch.cat([a[0] for a in affines], 1), torch.cat([a[1] for a in affines], 1))
    return out


def _int8(w: torch.Tensor, _group: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-10)  # (out,)
    q = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale.to(dtype)


def _int4(w: torch.Tensor, group: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    out_f, in_f = w.shape
    q = torch.empty(out_f, in_f, dtype=torch.int32)
    scale, lo = torch.empty(out_f, in_f // group), torch.empty(out_f, in_f // group)
    for r in range(0, out_f, FIT_ROWS):  # bounded temporaries for a 262k-row lm_head
        g = w[r:r + FIT_ROWS].reshape(-1, in_f // group, group)
        codes, scale[r:r + FIT_ROWS], lo[r:r + FIT_ROWS] = fit_int4(g)
        q[r:r + FIT_ROWS] = codes.view(-1, in_f)
    zero = lo + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # (groups, out, 2)
    return torch._convert_weight_to_int4pack_for_cpu(q, 1), scales_zeros.to(dtype)


# int4's mixture, like llama.cpp's Q4_K_M (which keeps attn_v / ffn_down at Q6_K): these decoder
# linears stay int8 under int4. Measured on Gemma 3 270M (bundled general text, bf16 ppl 17.35;
# every other linear int8): int4 qkv 18.51, gate_up 18.52, down 17.56, o 17.40.
INT8_UNDER_INT4 = ("qkv_proj", "gate_up_proj", "down_proj")
RESCORE_TOP = 1024  # logits per row recomputed exactly under a tied int4 lm_head (ppl: 32 -> 17.98, 256 -> 17.70, 1024 -> 17.45)


class RescoredHead:
    """An int4 lm_head whose top `RESCORE_TOP` logits per row are recomputed from exact rows.

    With tied weights the exact matrix is the input embedding, which stays in memory anyway: the
    kernel reads the 4-bit copy (a quarter of the bytes), then the best candidates of each row are
    dotted with their exact rows (top-k of the int4 logits, a gather of k rows):

        y = x @ int4(W).T          (T, V)
        i = topk(y, k)             (T, k)
        y[i] = x . W[i]            exact where sampling and the softmax's mass are

    Where our kernels are built (`quant_kernels`), `csrc/head_ops.cpp` does the last two lines:
    `head_topk` finds the same set as `torch.topk` in two vector passes over the row (ties at the
    k-th logit go to the lowest token ids; torch's heap picks among them in no stated order), and
    `head_rescore_` dots each candidate's embedding row in place, in fp32 like the bmm (no copy of
    the T * k rows; bf16 logits 1 ulp apart where a sum lies at a rounding boundary, ~1 in 8192).
    Gemma 3 270M, 1 thread, under load: search + rescoring 1 row 2.0 -> 0.8 ms, 8 rows 12.9 -> 4.7
    ms; int4-all decode step 26.4 -> 23.2 ms at 1 stream, 86.5 -> 76.9 ms at 8, same greedy tokens.
    """

    def __init__(self, q: QuantWeight, exact: torch.Tensor, top: int = RESCORE_TOP):
        self.q, self.exact, self.top, self.shape, self.spec = q, exact, top, q.shape, q.spec

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, in) -> (T, vocab) in x's dtype."""
        y = self.q.matmul(x)
        k, exact = min(self.top, y.shape[1]), self.exact.detach()
        ops = _head_ops(y, x, exact)
        if ops is not None:
            ops.head_rescore_(y, x.contiguous(), exact, ops.head_topk(y, k))
            return y
        idx = y.topk(k, dim=1, sorted=False).indices  # (T, k)
        # index_select copies whole rows: 4x faster than advanced indexing here (1024 x 640: 0.37 -> 0.09 ms)
        rows = exact.index_select(0, idx.flatten()).view(*idx.shape, -1)  # (T, k, in)
        return y.scatter_(1, idx, torch.bmm(rows, x.to(rows.dtype).unsqueeze(-1)).squeeze(-1).to(y.dtype))

    def dequantize(self) -> torch.Tensor:
        """The dense (out, in) matrix the kernel runs (for LoRA/DoRA and tests)."""
        return self.q.dequantize()


def _head_ops(y: torch.Tensor, x: torch.Tensor, exact: torch.Tensor):
    """`quant_kernels.ops()` where `RescoredHead` can take its fused search and rescoring: our kernels
    active, one CPU dtype (bf16 or fp32) throughout, no gradient wanted through x; else None."""
    if not quant_kernels.active() or (torch.is_grad_enabled() and x.requires_grad) or x.dim() != 2:
        return None
    same = y.dtype == x.dtype == exact.dtype and y.dtype in (torch.bfloat16, torch.float32)
    cpu = y.device.type == x.device.type == exact.device.type == "cpu"
    return quant_kernels.ops() if same and cpu and y.is_contiguous() and exact.is_contiguous() else None


def quantize_model(model: nn.Module, quantize: str | None) -> None:
    """Quantize the lm_head (and with '-all' every decoder Linear) in place; None leaves it exact.

    The input embedding is never quantized: with tied weights only the output projection changes,
    and an int4 lm_head then rescores its top logits from the embedding (`RescoredHead`). Under
    int4, `INT8_UNDER_INT4` linears take int8.
    """
    from tunelab.models.layers import Linear

    spec = QuantSpec.parse(quantize)
    if spec is None:
        return
    int8 = QuantSpec("int8", spec.group_size, spec.all_linears)
    for name, module in list(model.named_modules()):
        if not isinstance(module, Linear) or not (name == "lm_head" or spec.all_linears):
            continue
        if name == "lm_head" and spec.scheme == "int4" and quantize_tied_head(model, spec):
            continue
        mixed = spec.scheme == "int4" and name.rpartition(".")[2] in INT8_UNDER_INT4
        module.quantize(int8 if mixed else spec)


def quantize_tied_head(model: nn.Module, spec: QuantSpec) -> bool:
    """An int4 `RescoredHead` for `model.lm_head` if its weight is tied to the input embedding;
    False (nothing changed) otherwise."""
    exact = model.lm_head.__dict__.get("_parameters", {}).get("weight")
    if exact is None or exact.shape[1] % spec.group_size or not _tied(model, exact):
        return False
    model.lm_head.use_quantized(RescoredHead(QuantWeight.from_dense(exact.detach(), spec), exact))
    return True


def _tied(model: nn.Module, weight: torch.Tensor) -> bool:
    """Whether another parameter (the input embedding) shares `weight`, so it stays in memory."""
    return sum(p is weight for _, p in model.named_parameters(remove_duplicate=False)) > 1
