"""`Linear.pack`: few-row bf16 products through a oneDNN-packed copy give the plain product's bits,
and a weight written after packing is never served from the stale copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.engine import LLM, SamplingParams
from tunelab.models.layers import PACKED_ROWS, Linear, dense, pack_linears, packing_pays

pytestmark = pytest.mark.skipif(not packing_pays(torch.empty(1, dtype=torch.bfloat16)),
                                reason="packed one-row products run on AVX512-BF16 CPUs without AMX only")


def _linear(out: int, width: int, seed: int = 0) -> Linear:
    torch.manual_seed(seed)
    return Linear(width, out, bias=False).to(torch.bfloat16).requires_grad_(False)


@pytest.mark.parametrize("shape", [(1536, 640), (640, 2048), (4099, 333)])
def test_a_packed_row_equals_the_plain_product_bitwise(shape):
    layer = _linear(*shape)
    rows = [torch.randn(1, shape[1]).bfloat16() * 3 for _ in range(8)]
    plain = [F.linear(x, layer.weight) for x in rows]
    assert layer.pack() == shape[0] * shape[1] * 2
    with torch.inference_mode():
        assert all(torch.equal(layer(x), y) for x, y in zip(rows, plain))
        several = torch.cat(rows)  # a decode step of 8 rows: packed too
        assert torch.equal(layer(several), dense(several, layer.weight))
        chunk = torch.randn(PACKED_ROWS + 1, shape[1]).bfloat16()  # a prefill chunk: the plain product
        assert torch.equal(layer(chunk), F.linear(chunk, layer.weight))


def test_a_weight_written_after_packing_is_served_fresh():
    layer = _linear(256, 64)
    layer.pack()
    x = torch.randn(1, 64).bfloat16()
    with torch.inference_mode():
        before = layer(x)
        layer.weight.mul_(2)  # in place: the version moves, the packed copy is stale
        assert torch.equal(layer(x), F.linear(x, layer.weight)) and not torch.equal(layer(x), before)
    assert layer.packed is None
    layer.pack()
    layer.weight = torch.nn.Parameter(torch.zeros(256, 64, dtype=torch.bfloat16), requires_grad=False)
    with torch.inference_mode():
        assert torch.equal(layer(x), torch.zeros(1, 256, dtype=torch.bfloat16))  # replaced: not the packed one


def test_training_and_fp32_layers_take_the_plain_product():
    layer = _linear(128, 32).requires_grad_(True)
    layer.pack()
    y = layer(torch.randn(1, 32).bfloat16())  # autograd on: no packed path, gradients flow
    y.float().sum().backward()
    assert layer.weight.grad is not None
    assert Linear(32, 16).pack() == 0  # fp32: nothing to pack


def test_the_engine_packs_and_greedy_outputs_are_unchanged(tiny_models):
    prompts = [[5, 6, 7, 8] * 3, [9, 10, 11]]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    outs = {}
    for setting in ("off", "auto"):
        llm = LLM(tiny_models["gemma3"], dtype="bf16", max_model_len=96, block_size=4, packed_weights=setting)
        packed = [m for m in llm.engine.model.modules() if isinstance(m, Linear) and m.packed is not None]
        assert bool(packed) == (setting == "auto")
        outs[setting] = [o.outputs[0].token_ids for o in llm.generate(prompts, [params] * 2, use_tqdm=False)]
        solo = llm.generate(prompts[:1], params, use_tqdm=False)  # one row a step: the packed path
        outs[setting].append(solo[0].outputs[0].token_ids)
    assert outs["auto"] == outs["off"]
    assert pack_linears(torch.nn.Sequential(torch.nn.Linear(4, 4))) == 0  # only our Linear packs
