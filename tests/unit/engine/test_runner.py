"""Runner + scheduler together: preemption and recompute, and logits only where sampled."""

from __future__ import annotations

import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.runner import prepare_inputs
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence


def test_preemption_recompute_keeps_greedy_output(tiny_models):
    prompts = [[5 + i, 60, 61, 62 + i, 300] for i in range(4)]
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    tight = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=64, block_size=4, num_blocks=14)  # 56 slots for 100 tokens
    roomy = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=64)
    got = tight.generate(prompts, params)
    assert tight.engine.stats()["preemptions"] > 0
    assert [o.token_ids for o in got] == [o.token_ids for o in roomy.generate(prompts, params)]


def test_prepare_inputs_layout():
    a, b = Sequence([1, 2, 3, 4, 5, 6]), Sequence([7, 8, 9])
    a.block_table, b.block_table = [3, 1], [2]
    step = prepare_inputs([ScheduledItem(a, 4, 2, True), ScheduledItem(b, 0, 3, False)], 4, torch.device("cpu"))
    assert step.input_ids.tolist() == [5, 6, 7, 8, 9]
    assert step.attn.positions.tolist() == [4, 5, 0, 1, 2]
    assert step.attn.slot_mapping.tolist() == [4, 5, 8, 9, 10]  # block 1 holds positions 4..7 of a
    assert step.sample_rows.tolist() == [1]  # b is a chunk that does not reach its end
    assert step.attn.prefills[0].slots.tolist() == [12, 13, 14, 15, 4, 5]


def test_decode_rows_are_padded_per_sequence():
    a, b = Sequence([1, 2, 3, 4, 5, 6]), Sequence([7, 8])
    a.block_table, b.block_table = [0, 5], [2]
    step = prepare_inputs([ScheduledItem(a, 5, 1, True), ScheduledItem(b, 1, 1, True)], 4, torch.device("cpu"))
    assert step.attn.decode_lens.tolist() == [6, 2]
    assert step.attn.decode_slots[0].tolist() == [0, 1, 2, 3, 20, 21]
    assert step.attn.decode_slots[1, :2].tolist() == [8, 9]
    assert step.attn.decode_mask(None)[1, 0, 0].tolist() == [True, True, False, False, False, False]
    assert step.attn.decode_mask(3)[0, 0, 0].tolist() == [False, False, False, True, True, True]
