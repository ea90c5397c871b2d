"""The opt-in rows decode (`attention.ROWS_DECODE`): the query heads of a KV head attend as its query
rows. Close to torch's per-head GQA call (its own rounding, not its bits), every head paired with its
own KV head, padded batches and sliding windows included; an engine runs with it."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.models import attention
from tunelab.models.attention import AttnBatch, _decode, _sdpa


def _batch(lens: list[int], g: torch.Generator, kvh: int, d: int):
    cmax = max(lens)
    k_flat, v_flat = torch.randn(512, kvh, d, generator=g), torch.randn(512, kvh, d, generator=g)
    slots = torch.stack([torch.randperm(512, generator=g)[:cmax] for _ in lens])  # (B, Cmax) scattered
    for i, n in enumerate(lens):
        slots[i, n:] = 0  # padding, as the runner lays it out
    batch = AttnBatch(positions=torch.tensor([n - 1 for n in lens]), slot_mapping=torch.zeros(len(lens)),
                      decode_rows=torch.arange(len(lens)), decode_slots=slots,
                      decode_lens=torch.tensor(lens, dtype=torch.int32))
    return k_flat, v_flat, batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lens", [[40], [5, 8, 9, 23, 40]])  # one sequence (no mask) and a padded batch
@pytest.mark.parametrize("window", [None, 8])
@pytest.mark.parametrize("kvh", [1, 2])
def test_rows_decode_stays_close_to_per_head_sdpa(monkeypatch, dtype, lens, window, kvh):
    g = torch.Generator().manual_seed(2)
    heads, d = 4 * kvh, 32
    k_flat, v_flat, batch = _batch(lens, g, kvh, d)
    k_flat[:, 1:] *= 3  # KV heads unlike each other: a head paired with the wrong one is far off
    k_flat, v_flat = k_flat.to(dtype), v_flat.to(dtype)
    q = (2 * torch.randn(len(lens), heads, d, generator=g)).to(dtype)
    keys, vals = k_flat[batch.decode_slots].transpose(1, 2), v_flat[batch.decode_slots].transpose(1, 2)
    ref = _sdpa(q.unsqueeze(2), keys, vals, batch.decode_mask(window), 0.25, None).squeeze(2)  # per-head GQA
    monkeypatch.setattr(attention, "ROWS_DECODE", True)
    got = _decode(q, k_flat, v_flat, batch, 0.25, window, None)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2 ** -7, "atol": 2 ** -7}
    torch.testing.assert_close(got, ref, **tol)
    swapped = _decode(q.flip(1), k_flat, v_flat, batch, 0.25, window, None).flip(1)  # heads on other KV heads
    assert kvh == 1 or not torch.allclose(swapped, ref, **tol)


def test_an_engine_decodes_with_rows(monkeypatch, tiny_models):
    """Greedy decode of a tiny GQA model with rows on: the same tokens as per head here (random tiny
    weights leave no near-ties), through the real engine and cache."""
    prompts = [[5, 6, 7, 8] * 3, [9, 10, 11], [12, 13, 14, 15, 16, 12, 13]]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    llm = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=96, block_size=4)
    spec = llm.engine.runner.model.spec
    assert spec.num_heads > spec.num_kv_heads  # grouped heads: rows of their KV head
    runs = {}
    for flag in (False, True):
        monkeypatch.setattr(attention, "ROWS_DECODE", flag)
        runs[flag] = [o.outputs[0].token_ids for o in llm.generate(prompts, [params] * 3, use_tqdm=False)]
    assert runs[True] == runs[False] and all(len(t) == 12 for t in runs[True])
