"""Greedy next tokens from a bf16 copy of an fp32 lm_head, certified equal to the fp32 argmax.

On a CPU a decode step of an fp32 Gemma 3 spends most of its time in the 262k x 640 lm_head
(8 rows: 180 ms in fp32, 60 ms in bf16 on AVX512-BF16). A greedy row only needs the argmax, so
the bf16 product ranks the vocabulary and fp32 decides among the tokens that can still win:

    a_v = bf16(h) . bf16(w_v)                 (fp32 accumulation, rounded to bf16)
    |a_v - h . w_v| <= b = 3u |h| max|w_t| + 2u max|a_t|   u = 2^-8: Cauchy-Schwarz on the inputs'
                                                          rounding, the output's rounding, and the
                                                          fp32 sum's own error (hidden size < 58k)
    candidates: a_v >= max over t of a_t - 2b              the fp32 argmax is always among them

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
MIN_VOCAB = 32768  # below this the head is too small to matter
BLOCK = 1024  # columns per block when searching for candidates


class GreedyHead:
    """A bf16 copy of an fp32 lm_head weight (V, H) and its largest row norm, for certified argmax logits."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight  # the model's own fp32 weight, shared
        self.key = _key(weight)
        self.low = weight.to(torch.bfloat16)
        self.max_norm = float(weight.norm(dim=-1).max())  # the largest |w_v|

    def serves(self, model) -> bool:
        """Whether `model`'s head is still this weight, unchanged (an adapter may have wrapped it, a
        weight sync rewritten it); the runner uses the model's own head otherwise."""
        weight = dense_head(model)
        return weight is not None and _key(weight) == self.key

    @classmethod
    def for_model(cls, model) -> GreedyHead | None:
        """The head of `model` if it is a plain fp32 CPU linear with a large vocabulary, else None
        (bf16 models, quantized or LoRA-wrapped heads, GPUs: nothing to gain or not exact; a final
        soft-cap ties saturated logits far from the raw maximum, which the bound does not see)."""
        weight = dense_head(model)
        if weight is None or weight.dtype != torch.float32 or weight.is_cuda or weight.shape[0] < MIN_VOCAB \
                or getattr(model.spec, "final_softcap", None):
            return None
        return cls(weight)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, V) fp32: each row's exact logits at the tokens that can be its argmax, -inf elsewhere."""
        h = hidden.float()
        approx = F.linear(h.to(torch.bfloat16), self.low).float()  # (N, V): fp32 passes are the fast ones
        low, high = approx.amin(dim=-1), approx.amax(dim=-1)
        slack = (3 * U) * h.norm(dim=-1) * self.max_norm + (2 * U) * torch.maximum(low.abs(), high.abs())
        rows, cols = _at_least(approx, high - 2 * slack)  # a_v + b >= the best a_t - b
        out = torch.full(approx.shape, float("-inf"))
        out[rows, cols] = (h[rows] * self.weight[cols]).sum(dim=-1)  # (C,) exact fp32
        lost = torch.ones(len(h), dtype=torch.bool).index_fill_(0, rows, False)  # NaN rows: no candidate
        if lost.any():
            out[lost] = F.linear(h[lost], self.weight)
        return out


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
