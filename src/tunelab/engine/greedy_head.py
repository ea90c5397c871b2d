"""Greedy next tokens from a cheaper copy of the lm_head, certified equal to the head's own argmax.

On a CPU a decode step of Gemma 3 spends much of its time in the 262k x 640 lm_head (8 rows:
180 ms in fp32, 60 ms in bf16 on AVX512-BF16; one bf16 row: 40 ms, of a 52 ms step). A greedy
row only needs the argmax, so a cheaper product ranks the vocabulary and the head's own product
decides among the tokens that can still win:

    a_v ~ s_v,   |a_v - s_v| <= b       (s_v: the head's fp32 sum; b: the copy's bound, below)
    candidates: a_v >= max over t of a_t - 2b - r    the head's argmax is always among them

r covers a bf16 head's output rounding (ties: bf16 logits of 20 are 0.125 apart, and the first
of equal logits wins): o = bf16(s) moves s by at most u|s|, so r = 3u (|max a| + b); 0 in fp32.
The copy, chosen by the weight's dtype and the CPU (`best_kind`):
    fp32 weight, `_Bf16` (native bf16 CPUs): b = 3u |h| max|w_t| + 2u max|a_t| + g |h| max|w_t|,
           u = 2^-8: the inputs' and output's bf16 rounding (hidden size < 58k), by Cauchy-Schwarz
    fp32 weight, `_Fp16` (fbgemm's fp16-weight GEMM, elsewhere: fp32 activations and sums, ~3x
           fp32 as it reads half the bytes; emulated bf16 is slower than fp32):
           b = |h| ((2^-10 + 2g) max|w_t| + 2^-24 sqrt(H)): each weight moves to a neighbouring
           fp16 (relative gap 2^-10, absolute 2^-24 among subnormals)
    bf16 weight, `_Fp16`: the same with no relative gap (a bf16 value in fp16's normal range is an
           fp16 value) -- 13 ms instead of the bf16 GEMV's 40 (Gemma 3, one row, AVX512-BF16)
    bf16 weight, `_Int8` (where our int8 kernel runs): int8 codes, one scale a row, a bound per row
           (its docstring; it assumes the kernel's activation rounding, quant_gemv.h's quantize_x,
           which tests/unit/engine/test_greedy_head_int8.py checks against the real sums); for steps
           of up to INT8_ROWS rows, an fp16 copy beside it for wider ones (the int8 kernel's cost
           grows with rows)
    g = H 2^-24 / (1 - H 2^-24) bounds an fp32 sum in any order: the copy's and the head's own.

The candidates' logits are then computed by the head's own product (`layers.dense`) on the
union of the rows' candidate rows of the weight, every other logit is -inf: the bf16 head's
logits bit for bit (pinned in the tests, oneDNN's sums do not depend on the rows taken); an
fp32 head's up to the order of its sums, as any change of batch shape. So the sampler's argmax
picks what it would from the full logits. Only for steps whose rows all read nothing else of
the logits: greedy, no logprobs, penalties or constraints (`eligible`). Unlike the int4
`quant.RescoredHead`, which rescores a fixed top-k heuristically, the bound makes it exact.
The copies cost half the head's memory again (a 16-bit copy of an fp32 head), all of it (an fp16
copy of a bf16 head) or 1.5x (int8 and fp16 copies of a bf16 head); the engine makes them unless
`EngineConfig.greedy_head` is "off"; lm-eval's backend does too (eval/harness.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.engine.head_scan import dense_head
from tunelab.models.layers import dense, tensor_key

U = 2.0 ** -8  # bf16's unit roundoff
FP16_GAP, FP16_TINY, FP16_MAX = 2.0 ** -10, 2.0 ** -24, 65504.0  # relative gap, subnormal step, largest
FLUSH = 2.0 ** -126  # a bf16 product below fp32's normal range may be flushed to zero (DPBF16PS)
MIN_VOCAB = 32768  # below this the head is too small to matter
# Rows a step up to which an int8 copy ranks (beyond, the fp16 copy kept beside it): Gemma 3 270M head, 1
# thread, interleaved, load 2-5: 1 row 16.4 -> 12.1 ms, 2 rows 19.0 -> 13.8, 3: 17.6 vs 19.2, 8: 33 vs 45
INT8_ROWS = 2
BLOCK = 1024  # columns per block when searching for candidates


class GreedyHead:
    """A cheaper copy (`_Bf16`, `_Fp16`, `_Int8`) of an fp32 or bf16 lm_head weight (V, H), for certified
    argmax logits."""

    def __init__(self, weight: torch.Tensor, kind: str | None = None):
        """`kind`: "bf16", "fp16" or "int8"; None: the one this CPU runs fast for the weight (`best_kind`).
        A bf16 weight ranks with an fp16 or int8 copy (a bf16 copy would be the head itself)."""
        auto, kind = kind is None, kind or best_kind(weight.dtype)
        if kind not in KINDS:
            raise ValueError(f"greedy head copy '{kind}' is not one of {', '.join(KINDS)}")
        if weight.dtype == torch.bfloat16 and kind == "bf16":
            raise ValueError("a bf16 lm_head ranks with an fp16 or int8 copy, not 'bf16'")
        self.weight = weight  # the model's own weight, shared
        self.key = tensor_key(weight)
        self.low = KINDS[kind](weight)
        self.wide = None  # for steps of more than INT8_ROWS rows, where our int8 kernel is the slower
        if auto and kind == "int8" and "fbgemm" in torch.backends.quantized.supported_engines:
            try:
                self.wide = _Fp16(weight)
            except ValueError:  # beyond fp16's range: int8 for every step
                pass
        self.rounding = 3 * U if weight.dtype == torch.bfloat16 else 0.0  # r / (|max a| + b): bf16 output

    def serves(self, model) -> bool:
        """Whether `model`'s head is still this weight, unchanged (an adapter may have wrapped it, a
        weight sync rewritten it); the runner uses the model's own head otherwise."""
        weight = dense_head(model)
        return weight is not None and tensor_key(weight) == self.key

    @classmethod
    def for_model(cls, model) -> GreedyHead | None:
        """The head of `model` if it is a plain fp32 or bf16 CPU linear with a large vocabulary, else
        None (fp16, quantized or LoRA-wrapped heads, GPUs: nothing to gain or not exact; a final
        soft-cap ties saturated logits far from the raw maximum, which the bound does not see; a CPU
        where no copy is faster; weights beyond fp16's range for an fp16 copy)."""
        weight = dense_head(model)
        if weight is None or weight.dtype not in (torch.float32, torch.bfloat16) or weight.is_cuda \
                or weight.shape[0] < MIN_VOCAB or getattr(model.spec, "final_softcap", None):
            return None
        kind = best_kind(weight.dtype)
        try:
            return None if kind is None else cls(weight)  # the kind (and for int8 the fp16 copy) chosen there
        except ValueError:  # beyond fp16's range
            return None

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, V) fp32: each row's logits as the head computes them at the tokens that can be its
        argmax (and at the other rows' candidates), -inf elsewhere."""
        hidden = hidden.to(self.weight.dtype)
        h = hidden.float()  # exact: a bf16 hidden state widens without rounding
        low = self.wide if self.wide is not None and len(h) > INT8_ROWS else self.low
        if isinstance(low, _Int8):
            approx, lost, cols = self._int8_candidates(h)
        else:
            approx, slack = low.rank(h)  # (N, V) fp32, (N,) bound on |approx - the head's sum|
            top = approx.amax(dim=-1)
            floor = top - 2 * slack - self.rounding * (top.abs() + slack)  # a_v + b + r >= the best a_t - b
            cols = _at_least(approx, floor)[1].unique()  # (C,) ascending: every row's candidates
            lost = top.isnan()  # a NaN row has no candidate: the full head, NaN as it is
        out = torch.full(approx.shape, float("-inf"))
        # the head's own product on the candidates' weight rows, all N rows at once as the head would
        out[:, cols] = dense(hidden, self.weight.index_select(0, cols)).float()
        if lost.any():
            out[lost] = dense(hidden[lost], self.weight).float()
        return out

    def _int8_candidates(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row bounds b_v (`_Int8`): v stays while a_v + p_v >= max over t of a_t - p_t,
        p = b + r (|a| + b) (r: a bf16 head's output rounding). Returns approx, lost rows, columns."""
        approx, pad, lost = self.low.rank(h)
        if self.rounding:
            pad.mul_(1 + self.rounding).add_(approx.abs(), alpha=self.rounding)
        lower = (approx - pad).amax(dim=-1, keepdim=True)  # (N, 1): a logit some token reaches
        keep = approx + pad >= lower
        keep[lost] = False  # those rows take the full head
        return approx, lost, torch.nonzero(keep, as_tuple=True)[1].unique()


class _Bf16:
    """bf16 copy of an fp32 weight: native bf16 products (AVX512-BF16, AMX)."""

    def __init__(self, weight: torch.Tensor):
        self.low = weight.to(torch.bfloat16)
        width = weight.shape[1]
        max_norm = float(weight.norm(dim=-1).max())  # the largest |w_v|
        self.per_h = (3 * U + _sum_error(width)) * max_norm  # inputs' rounding; the fp32 head's own sums

    def rank(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        approx = F.linear(h.to(torch.bfloat16), self.low).float()  # (N, V): fp32 passes are the fast ones
        low, high = approx.aminmax(dim=-1)
        return approx, self.per_h * h.norm(dim=-1) + (2 * U) * torch.maximum(low.abs(), high.abs())


class _Fp16:
    """fp16 copy of an fp32 or bf16 weight in fbgemm's packed layout: fp32 activations and sums,
    fp16 weights widened in registers. The weight must lie within fp16's range (prepacking clamps
    in place, so a copy is prepacked)."""

    def __init__(self, weight: torch.Tensor):
        if float(weight.abs().max()) > FP16_MAX:
            raise ValueError(f"lm_head weights beyond fp16's range (|w| > {FP16_MAX}): no fp16 copy")
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.float(), None)
        width = weight.shape[1]
        gap = 0.0 if weight.dtype == torch.bfloat16 else FP16_GAP  # bf16 values are fp16 values, subnormals aside
        sums = _sum_error(width)
        max_norm = float(weight.float().norm(dim=-1).max())  # |w_v - w16_v| <= gap |w_v| + tiny sqrt(H)
        self.per_h = (gap + sums * (2 + gap)) * max_norm + (1 + sums) * FP16_TINY * width ** 0.5
        self.flush = width * FLUSH if weight.dtype == torch.bfloat16 else 0.0  # the bf16 head's flushed products

    def rank(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.quantized.linear_dynamic_fp16(h, self.packed), self.per_h * h.norm(dim=-1) + self.flush


class _Int8:
    """int8 copy (one fp32 scale a row) of an fp32 or bf16 weight, ranked by our kernel (`quant_kernels.int8`,
    which also rounds the activations: per 32 inputs to d_b q, d_b = max|h_b| / 127). Its bound is per row:
        |a_v - s_v| <= alpha_v |h| + beta_v |h - hq| + flush,   |h - hq| <= (1/2 + 2^-15) sqrt(32 sum_b d_b^2)
        alpha_v = |w_v - w8_v| + g |w_v| + g' |w8_v|   (the weight's rounding; the head's and the copy's fp32 sums)
        beta_v = (1 + g') |w8_v|                       (the activations' rounding), g' = g + 2^-24 (the scale)
    Rows whose hidden state is not finite, or has a block so small that 1/d_b overflows, take the full head."""

    def __init__(self, weight: torch.Tensor):
        from tunelab.models import quant_kernels

        if quant_kernels.ops() is None or not quant_kernels.active() or weight.shape[1] % 32:
            raise ValueError("no int8 copy: our int8 kernel does not run here (or the width is not a multiple of 32)")
        width, rows = weight.shape[1], weight.shape[0]
        self.codes = torch.empty(weight.shape, dtype=torch.int8)
        self.scale = torch.empty(rows)
        alpha, beta = torch.empty(rows, dtype=torch.float64), torch.empty(rows, dtype=torch.float64)
        g = _sum_error(width)
        for start in range(0, rows, 16384):  # exact float64 errors, a slice at a time
            w = weight[start:start + 16384].float()
            amax = w.abs().amax(dim=1)
            scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
            codes = torch.round(w / scale[:, None]).clamp_(-127, 127)
            low = codes.double() * scale.double()[:, None]
            low_norm = low.norm(dim=1)
            alpha[start:start + 16384] = ((w.double() - low).norm(dim=1) + g * w.double().norm(dim=1)
                                          + (g + 2.0 ** -24) * low_norm)
            beta[start:start + 16384] = (1 + g + 2.0 ** -24) * low_norm
            self.codes[start:start + 16384] = codes.to(torch.int8)
            self.scale[start:start + 16384] = scale
        margin = 1 + 2.0 ** -20  # the float64 norms' own rounding, and the float32 bounds below
        self.alpha, self.beta = (alpha * margin).float(), (beta * margin).float()
        self.flush = width * FLUSH if weight.dtype == torch.bfloat16 else 0.0

    def rank(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (N, H) fp32 -> approx (N, V), per-row bound (N, V) and the rows (N,) it cannot rank."""
        from tunelab.models import quant_kernels

        n, width = h.shape
        blocks = h.view(n, width // 32, 32).abs().amax(dim=-1)  # (N, H/32): d_b = this / 127
        lost = ~torch.isfinite(h).all(dim=-1) | ((blocks > 0) & (blocks < 2.0 ** -100)).any(dim=-1)
        h = torch.where(lost[:, None], torch.zeros_like(h), h)
        act = (0.5 + 2.0 ** -15) * (1 + 2.0 ** -20) / 127 * (32 * blocks.double().square().sum(dim=-1)).sqrt()
        parts = [quant_kernels.int8(part, self.codes, self.scale) for part in h.split(64)]
        if any(part is None for part in parts):  # the kernels were switched off since: every row takes the head
            return torch.zeros(n, len(self.codes)), torch.zeros(n, len(self.codes)), torch.ones(n, dtype=torch.bool)
        approx = torch.cat(parts)
        bound = torch.outer(h.double().norm(dim=-1).float(), self.alpha).add_(torch.outer(act.float(), self.beta))
        return approx, bound.add_(self.flush), lost


KINDS = {"bf16": _Bf16, "fp16": _Fp16, "int8": _Int8}


def _sum_error(width: int) -> float:
    """g: the relative error bound of an fp32 sum of `width` terms in any order (over sum |terms|)."""
    return width * 2.0 ** -24 / (1 - width * 2.0 ** -24)


def best_kind(dtype: torch.dtype = torch.float32) -> str | None:
    """The copy this CPU ranks a `dtype` head fastest with: for fp32, "bf16" where the CPU has native
    bf16, else "fp16" where torch has fbgemm (x86), else None (emulated bf16 is slower than the fp32
    head); for bf16, "int8" where our int8 kernel runs (with an fp16 copy for wider steps: `INT8_ROWS`),
    else "fp16" where torch has fbgemm, else None."""
    from tunelab.dtypes import cpu_has_fast_bf16
    from tunelab.models import quant_kernels

    if dtype == torch.float32 and cpu_has_fast_bf16():
        return "bf16"
    if dtype == torch.bfloat16 and quant_kernels.active():
        return "int8"
    return "fp16" if "fbgemm" in torch.backends.quantized.supported_engines else None


def _at_least(values: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of `values` (N, V) >= the row's `floor` (N,), columns ascending in each row. The
    few hits are searched for in the blocks of BLOCK columns whose maximum reaches the floor: a
    comparison and `nonzero` over the whole (N, V) cost 3x the block maxima."""
    n, vocab = values.shape
    if vocab % BLOCK:
        return torch.nonzero(values >= floor[:, None], as_tuple=True)
    blocks = values.view(n, vocab // BLOCK, BLOCK)
    block_rows, block_ids = torch.nonzero(blocks.amax(dim=-1) >= floor[:, None], as_tuple=True)
    hit, col = torch.nonzero(blocks[block_rows, block_ids] >= floor[block_rows, None], as_tuple=True)
    return block_rows[hit], block_ids[hit] * BLOCK + col


def eligible(seqs) -> bool:
    """Whether every row of a step only needs its argmax: greedy, no logprobs, penalties or grammar."""
    return all(p.greedy and p.logprobs is None and p.repetition_penalty == 1.0 and not p.presence_penalty
               and not p.frequency_penalty and p.structured_outputs is None for p in (s.params for s in seqs))
