"""Packing: plans are deterministic and complete; a packed row's loss equals per-example losses."""

from __future__ import annotations

import pytest
import torch

from tunelab.train.loss import SelectedLogitsLoss
from tunelab.train.packing import MicroBatch, collate, plan_epoch


def test_plan_covers_every_example_once_and_is_seeded():
    lengths = [5, 9, 3, 12, 7, 7, 2, 10]
    plan = plan_epoch(lengths, micro_batch_size=2, cutoff_len=12, packing=True, seed=1, epoch=0)
    seen = sorted(i for mb in plan for i in mb.indices)
    assert seen == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in mb.indices) <= 24 for mb in plan)
    again = plan_epoch(lengths, 2, 12, True, seed=1, epoch=0)
    assert [mb.indices for mb in plan] == [mb.indices for mb in again]
    other = plan_epoch(lengths, 2, 12, True, seed=1, epoch=1)
    assert [mb.indices for mb in plan] != [mb.indices for mb in other]


def test_bucketing_groups_similar_lengths():
    lengths = [1, 100, 2, 99, 3, 98, 4, 97]
    plan = plan_epoch(lengths, micro_batch_size=2, cutoff_len=128, packing=False, seed=0, epoch=0)
    padded = sum(mb.tokens(lengths) for mb in plan)
    assert padded - sum(lengths) <= 8  # sorting keeps padding to the few-token gaps


def test_collate_packed_restarts_positions_and_shifts_labels_per_example(tiny_examples):
    batch = collate(MicroBatch([0, 1], packed=True), tiny_examples)
    n0 = len(tiny_examples[0].input_ids)
    pos = batch["position_ids"][0].tolist()
    assert pos[0] == 0 and pos[n0] == 0 and pos[n0 - 1] == n0 - 1
    labels = batch["labels"][0].tolist()
    assert labels[n0 - 1] == -100  # the last token of example 0 never predicts example 1
    assert labels[: n0 - 1] == tiny_examples[0].labels[1:]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_packed_loss_equals_per_example_losses(arch, tiny_models, tiny_examples):
    """Cross-contamination would change the packed loss; gemma3 also has a sliding window of 8."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], attn_implementation="sdpa").eval()
    loss = SelectedLogitsLoss(model)
    ids = [0, 1, 2, 3]
    with torch.no_grad():
        packed, n_packed = loss(**collate(MicroBatch(ids, packed=True), tiny_examples))
        single = [loss(**collate(MicroBatch([i], packed=True), tiny_examples)) for i in ids]
        padded, n_padded = loss(**collate(MicroBatch(ids, packed=False), tiny_examples))
    assert int(n_packed) == sum(int(n) for _, n in single) == int(n_padded)
    expected = sum(float(s) for s, _ in single)
    assert float(packed) == pytest.approx(expected, rel=1e-5)
    assert float(padded) == pytest.approx(expected, rel=1e-5)


def test_selected_logits_match_full_forward_loss(tiny_models, tiny_examples):
    """Applying lm_head only where labels exist gives the standard transformers loss."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["gemma3"]).eval()
    model.config.final_logit_softcapping = 5.0  # exercise Gemma's soft-capping path too
    ex = tiny_examples[0]
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels).loss
        ours, n = SelectedLogitsLoss(model)(**collate(MicroBatch([0], packed=True), [ex]))
    assert float(ours / n) == pytest.approx(float(ref), rel=1e-5)
