"""Prompt logprobs read off the lm_head a vocabulary slice at a time equal those of whole logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.engine.head_scan import VOCAB_SLICE, scan


@pytest.mark.parametrize("softcap,top", [(None, 5), (3.0, 0)])
def test_slices_give_the_whole_rows_logsumexp_targets_tops_and_sampled_logits(softcap, top):
    gen = torch.Generator().manual_seed(0)
    vocab = 2 * VOCAB_SLICE + 1000  # a short last slice
    weight, hidden = torch.randn(vocab, 32, generator=gen), torch.randn(7, 32, generator=gen)
    targets = torch.tensor([0, vocab - 1, VOCAB_SLICE, VOCAB_SLICE - 1, 123])  # slice edges
    logits = F.linear(hidden, weight)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    norm, chosen, vals, ids, sampled = scan(weight, softcap, hidden, 5, targets, top)
    torch.testing.assert_close(norm, logits[:5].logsumexp(-1, keepdim=True))
    torch.testing.assert_close(chosen, logits[:5].gather(1, targets[:, None])[:, 0])
    torch.testing.assert_close(sampled, logits[5:])
    if top:
        want = logits[:5].topk(top)
        torch.testing.assert_close(vals, want.values)
        assert torch.equal(ids, want.indices)
    else:
        assert vals is None and ids is None
