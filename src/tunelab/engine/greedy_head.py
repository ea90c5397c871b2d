"""Greedy next tokens from a low-precision copy of an fp32 lm_head, certified equal to the fp32 argmax.

On a CPU a decode step of an fp32 Gemma 3 spends much of its time in the 262k x 640 lm_head
(8 rows: 180 ms in fp32, 60 ms in bf16 on AVX512-BF16). A greedy row only needs the argmax, so
a cheaper product ranks the vocabulary and fp32 decides among the tokens that can still win:

    a_v ~ h . w_v,   |a_v - h . w_v| <= b       (b: the copy's bound, below)
    candidates: a_v >= max over t of a_t - 2b    the fp32 argmax is always among them

Two copies, chosen by the CPU (`_Bf16`: one with native bf16; `_Fp16`: fbgemm's fp16-weight
GEMM elsewhere, where bf16 is emulated and slower than fp32 (AVX2: 8 rows 630 vs 520 ms), and
fp16 weights with fp32 activations and sums run at ~3x fp32 (memory-bound: half the bytes)):
    bf16:  b = 3u |h| max|w_t| + 2u max|a_t|, u = 2^-8: the inputs' and output's bf16 rounding
           and the fp32 sum's own error (hidden size < 58k), by Cauchy-Schwarz
    fp16:  b = |h| ((2^-10 + g) max|w_t| + 2^-24 sqrt(H)): each weight moves to a neighbouring
           fp16 (relative gap 2^-10, absolute 2^-24 among subnormals); g = H 2^-24 / (1 - H 2^-24)
           bounds fp32 summation in any order

The candidates' fp32 logits are computed exactly (a few rows of the weight); every other
logit is -inf. So the sampler's argmax picks what it would from the full fp32 logits (up to
fp32 summation order, as any change of batch shape). Only for greedy rows that read nothing
else of the logits: no logprobs, penalties or constraints (`eligible`). Unlike the int4
`quant.RescoredHead`, which rescores a fixed top-k heuristically, the bound makes it exact.
The copy costs half the head's memory again, so an engine user turns it on
(`ModelRunner.greedy_head`); lm-eval's backend does (eval/harness.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.engine.head_scan import dense_head

U = 2.0 ** -8  # bf16's unit roundoff
FP16_GAP, FP16_TINY, FP16_MAX = 2.0 ** -10, 2.0 ** -24, 65504.0  # relative gap, subnormal step, largest
MIN_VOCAB = 32768  # below this the head is too small to matter
BLOCK = 1024  # columns per block when searching for candidates


class GreedyHead:
    """A low-precision copy (`_Bf16` or `_Fp16`) of an fp32 lm_head weight (V, H), for certified argmax logits."""

    def __init__(self, weight: torch.Tensor, kind: str | None = None):
        """`kind`: "bf16" or "fp16"; None: the one this CPU runs fast (`best_kind`)."""
        self.weight = weight  # the model's own fp32 weight, shared
        self.key = _key(weight)
        self.low = (_Fp16 if (kind or best_kind()) == "fp16" else _Bf16)(weight)

    def serves(self, model) -> bool:
        """Whether `model`'s head is still this weight, unchanged (an adapter may have wrapped it, a
        weight sync rewritten it); the runner uses the model's own head otherwise."""
        weight = dense_head(model)
        return weight is not None and _key(weight) == self.key

    @classmethod
    def for_model(cls, model) -> GreedyHead | None:
        """The head of `model` if it is a plain fp32 CPU linear with a large vocabulary, else None
        (bf16 models, quantized or LoRA-wrapped heads, GPUs: nothing to gain or not exact; a final
        soft-cap ties saturated logits far from the raw maximum, which the bound does not see; a CPU
        with neither native bf16 nor fbgemm; weights beyond fp16's range where bf16 is emulated)."""
        weight = dense_head(model)
        if weight is None or weight.dtype != torch.float32 or weight.is_cuda or weight.shape[0] < MIN_VOCAB \
                or getattr(model.spec, "final_softcap", None):
            return None
        kind = best_kind()
        try:
            return None if kind is None else cls(weight, kind)
        except ValueError:  # beyond fp16's range
            return None

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, V) fp32: each row's exact logits at the tokens that can be its argmax, -inf elsewhere."""
        h = hidden.float().contiguous()
        approx, slack = self.low.rank(h)  # (N, V) fp32, (N,) bound on |approx - exact|
        rows, cols = _at_least(approx, approx.amax(dim=-1) - 2 * slack)  # a_v + b >= the best a_t - b
        out = torch.full(approx.shape, float("-inf"))
        out[rows, cols] = (h[rows] * self.weight[cols]).sum(dim=-1)  # (C,) exact fp32
        lost = torch.ones(len(h), dtype=torch.bool).index_fill_(0, rows, False)  # NaN rows: no candidate
        if lost.any():
            out[lost] = F.linear(h[lost], self.weight)
        return out


class _Bf16:
    """bf16 copy of the weight: native bf16 products (AVX512-BF16, AMX)."""

    def __init__(self, weight: torch.Tensor):
        self.low = weight.to(torch.bfloat16)
        self.max_norm = float(weight.norm(dim=-1).max())  # the largest |w_v|

    def rank(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        approx = F.linear(h.to(torch.bfloat16), self.low).float()  # (N, V): fp32 passes are the fast ones
        low, high = approx.aminmax(dim=-1)
        return approx, (3 * U) * h.norm(dim=-1) * self.max_norm + (2 * U) * torch.maximum(low.abs(), high.abs())


class _Fp16:
    """fp16 copy of the weight in fbgemm's packed layout: fp32 activations and sums, fp16 weights
    widened in registers. The weight must lie within fp16's range (prepacking clamps in place)."""

    def __init__(self, weight: torch.Tensor):
        if float(weight.abs().max()) > FP16_MAX:
            raise ValueError(f"lm_head weights beyond fp16's range (|w| > {FP16_MAX}): no fp16 copy")
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight, None)
        width = weight.shape[1]
        sums = width * 2.0 ** -24 / (1 - width * 2.0 ** -24)  # g: fp32 summation in any order
        max_norm = float(weight.norm(dim=-1).max())  # |w_v - w16_v| <= gap |w_v| + tiny sqrt(H); g |w16_v| for the sums
        self.per_h = (FP16_GAP + sums * (1 + FP16_GAP)) * max_norm + (1 + sums) * FP16_TINY * width ** 0.5

    def rank(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.quantized.linear_dynamic_fp16(h, self.packed), self.per_h * h.norm(dim=-1)


def best_kind() -> str | None:
    """The copy this CPU ranks fastest with: "bf16" where it has native bf16, else "fp16" where torch
    has fbgemm (x86), else None (emulated bf16 is slower than the fp32 head)."""
    from tunelab.dtypes import cpu_has_fast_bf16

    if cpu_has_fast_bf16():
        return "bf16"
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


def _key(weight: torch.Tensor) -> tuple:
    """Changes when the weight may have (an inference tensor has no version counter: never written)."""
    return weight.data_ptr(), None if weight.is_inference() else weight._version
