"""Per-token log-probs through the chunked head, pair batches, and loss values at a known point."""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn

from tunelab.data.tokenize import IGNORE, PreferenceExample
from tunelab.train import preference as pl
from tunelab.train.loss import head_logprobs
from tunelab.train.pairs import collate_preference


def _lm(cap: float | None, vocab: int = 50, hidden: int = 8):
    head = nn.Linear(hidden, vocab, bias=False)
    return types.SimpleNamespace(get_output_embeddings=lambda: head,
                                 config=types.SimpleNamespace(final_logit_softcapping=cap)), head


@pytest.mark.parametrize("cap", [None, 3.0])
def test_head_logprobs_value_and_grads_match_plain_autograd(cap):
    torch.manual_seed(0)
    lm, head = _lm(cap)
    hidden = torch.randn(7, 8, requires_grad=True)
    targets = torch.randint(0, 50, (7,))
    weights = torch.randn(7)  # a per-row upstream gradient, as a preference loss gives
    out = head_logprobs(lm, hidden, targets, chunk=3)
    (out * weights).sum().backward()
    got = (out.detach(), hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    logits = head(hidden)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    ref = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    (ref * weights).sum().backward()
    for a, b in zip(got, (ref.detach(), hidden.grad, head.weight.grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pair_batch_is_chosen_then_rejected_with_completion_labels_only():
    examples = [PreferenceExample([1, 2], [[3, 4], [5]]), PreferenceExample([6], [[7], [8, 9, 10]])]
    batch = collate_preference([0, 1], examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [6, 7, 0, 0], [1, 2, 5, 0], [6, 8, 9, 10]]
    I = IGNORE  # noqa: E741
    # labels are shifted: position t holds token t+1, and only completion tokens are targets
    assert batch["labels"].tolist() == [[I, 3, 4, I], [7, I, I, I], [I, 5, I, I], [8, 9, 10, I]]


def test_kto_batch_pairs_each_prompt_with_the_next_completion_for_kl():
    examples = [PreferenceExample([1], [[2]], label=True), PreferenceExample([3], [[4, 5]], label=False)]
    batch = collate_preference([1], examples, pad_id=0)
    assert batch["kl_input_ids"].tolist() == [[3, 2]] and batch["desirable"].tolist() == [False]


def test_losses_at_policy_equal_reference():
    zero = torch.zeros(3)
    lens = torch.full((3,), 4.0)
    assert pl.dpo_loss(zero, zero, zero, zero).losses.tolist() == pytest.approx([math.log(2)] * 3)
    assert pl.dpo_loss(zero, zero, zero, zero, loss_type="hinge").losses.tolist() == [1.0] * 3
    ipo = pl.dpo_loss(zero, zero, zero, zero, beta=0.5, loss_type="ipo", chosen_lens=lens, rejected_lens=lens)
    assert ipo.losses.tolist() == pytest.approx([1.0] * 3)
    kto = pl.kto_loss(zero, zero, torch.tensor([True, False, True]), torch.tensor(0.0))
    assert kto.losses.tolist() == pytest.approx([0.5] * 3)
    with pytest.raises(ValueError, match="unknown DPO loss 'nope'"):
        pl.dpo_loss(zero, zero, zero, zero, loss_type="nope")
