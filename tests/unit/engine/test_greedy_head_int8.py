"""The int8 copy of the certified greedy head (`greedy_head._Int8`): its per-row bound holds where the
copy ranks wrong (outlier weights, outlier and tiny activations), the head's own argmax survives,
and rows it cannot rank (non-finite, blocks too small for the kernel's scale) take the full head."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine.greedy_head import INT8_ROWS, GreedyHead
from tunelab.engine.sampling import _argmax
from tunelab.models import quant_kernels
from tunelab.models.layers import dense

pytestmark = pytest.mark.skipif(not quant_kernels.active() or quant_kernels.ops() is None,
                                reason="an int8 copy ranks with our int8 kernel")


def _misranked(vocab: int = 4096, width: int = 128, dtype=torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows in pairs: a row and a near copy whose one large outlier coarsens its int8 codes, so the
    copy's order of the pair is often wrong; hidden rows aligned with one pair each, with outlier and
    near-zero blocks, at several scales."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(vocab, width, generator=gen)
    weight[1::2] = weight[0::2] + 2e-3 * torch.randn(vocab // 2, width, generator=gen)
    weight[1::2, 5] = 40.0  # the outlier sets the row's scale (40 / 127): every other code is coarse
    weight[0::2, 5] = 40.0 - 1e-2
    picks = torch.randint(0, vocab, (48,), generator=gen)
    hidden = weight[picks] * torch.logspace(-1, 1, 48)[:, None] + 0.01 * torch.randn(48, width, generator=gen)
    hidden[:, 5] *= 1e-3  # the pair's outlier weighs little: their order is decided by the coarse codes
    hidden[::3, 64:96] *= 1e-4  # a near-zero block; an outlier input in another
    hidden[1::3, 100] += 30.0
    return weight.to(dtype), hidden.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_bound_holds_and_the_heads_argmax_survives_where_the_copy_ranks_wrong(dtype):
    weight, hidden = _misranked(dtype=dtype)
    head = GreedyHead(weight, "int8")
    h = hidden.float()
    approx, bound, lost = head.low.rank(h)
    exact = h.double() @ weight.double().T  # the real sums
    assert not lost.any()
    assert ((approx.double() - exact).abs() <= bound.double()).all()
    wrong = approx.argmax(-1) != exact.argmax(-1)
    assert wrong.sum() >= 8  # the copy alone would pick another token in these rows
    full = dense(hidden, weight).float()
    got = head.logits(hidden)
    assert torch.equal(_argmax(got), _argmax(full))
    kept = torch.isfinite(got)
    assert torch.equal(got[kept], full[kept]) if dtype == torch.bfloat16 else torch.allclose(got[kept], full[kept])
    assert kept.any(0).sum() < weight.shape[0]  # outlier rows bound loosely, yet not the whole vocabulary


def test_bf16_near_ties_rounded_together_keep_the_first_index():
    """bf16 logits that round equal: the first index wins, as in the full head."""
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(4096, 64, generator=gen).bfloat16()
    weight[1::4] = weight[0::4]
    weight[3::4] = weight[2::4]
    weight[3::4, 0] = (weight[2::4, 0].view(torch.int16) + 1).view(torch.bfloat16)
    hidden = (weight[torch.randint(0, 4096, (32,), generator=gen)].float() * 8).bfloat16()
    full = dense(hidden, weight).float()
    top2 = full.topk(2).values
    assert (top2[:, 0] == top2[:, 1]).sum() >= 16
    assert torch.equal(_argmax(GreedyHead(weight, "int8").logits(hidden)), _argmax(full))


def test_rows_it_cannot_rank_take_the_full_head():
    weight, hidden = _misranked()
    hidden[2] = float("inf")
    hidden[4, :32] = 1e-35  # 1 / (1e-35 / 127) overflows fp32: the kernel's codes would be garbage
    head = GreedyHead(weight, "int8")
    got, full = head.logits(hidden), dense(hidden, weight).float()
    assert head.low.rank(hidden.float())[2].nonzero().flatten().tolist() == [2, 4]
    assert torch.equal(got[4], full[4])  # every logit, as the full head
    assert torch.equal(got[2].isnan(), full[2].isnan())
    others = torch.ones(len(hidden), dtype=torch.bool)
    others[[2, 4]] = False
    assert torch.equal(_argmax(got[others]), _argmax(full[others]))


def test_the_default_bf16_head_ranks_narrow_steps_in_int8_and_wide_ones_in_fp16(monkeypatch):
    """By default a bf16 head keeps both copies: steps of up to INT8_ROWS rows rank with int8, wider
    ones with fp16 (the int8 kernel's cost grows with rows). With our kernels switched off the int8
    copy ranks nothing: its rows take the full head, every logit finite; the fp16 copy still ranks."""
    weight, hidden = _misranked()
    head = GreedyHead(weight)
    assert head.wide is not None and type(head.low).__name__ == "_Int8"
    full = dense(hidden, weight).float()
    for rows in (slice(0, INT8_ROWS), slice(0, INT8_ROWS + 1)):
        assert torch.equal(_argmax(head.logits(hidden[rows])), _argmax(full[rows]))
    monkeypatch.setattr(quant_kernels, "enabled", False)
    narrow, wide = head.logits(hidden[:INT8_ROWS]), head.logits(hidden[:INT8_ROWS + 1])
    assert torch.equal(narrow, full[:INT8_ROWS])  # the full head's logits, all of them
    assert not torch.isfinite(wide).all() and torch.equal(_argmax(wide), _argmax(full[:INT8_ROWS + 1]))
