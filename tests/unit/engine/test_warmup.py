"""The load-time warm-up runs each distinct decoder linear at every decode batch size, within its budget."""

from __future__ import annotations

import logging

import torch

from tunelab.engine import LLM
from tunelab.engine.warmup import distinct_linears, warm_up, warm_up_engine


def test_warm_up_covers_every_batch_size_once_per_shape(tiny_models, caplog):
    llm = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=64, num_blocks=16, max_num_seqs=6)
    model = llm.engine.model
    shapes = {(m.in_features, m.out_features) for m in distinct_linears(model)}
    assert len(shapes) == len(distinct_linears(model)) >= 3  # qkv, o, gate_up, down share across layers
    calls: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
             for m in distinct_linears(model)]
    rows, _ = warm_up(model, 6, torch.float32, torch.device("cpu"))
    assert rows == 6 and sorted(set(calls)) == [2, 3, 4, 5, 6] and len(calls) == 5 * len(shapes)
    calls.clear()
    assert warm_up(model, 64, torch.float32, torch.device("cpu"), budget_s=0.0)[0] == 1  # the budget stops it first
    for h in hooks:
        h.remove()
    with caplog.at_level(logging.INFO, logger="tunelab.engine"):
        warm_up_engine(llm.engine)
    assert "decode batches of 2..6 rows" in caplog.text
