"""Our model code against transformers on tiny random models: prefill, chunked prefill, decode."""

from __future__ import annotations

import pytest
import torch

from tiny_models import _COMMON, TOKENIZER_DIR

from tunelab.engine.kv_cache import KVCache
from tunelab.engine.runner import prepare_inputs
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence
from tunelab.models.loader import load_model

BLOCK = 4
PROMPT = [(7 * i + 3) % 500 + 5 for i in range(21)]  # longer than the tiny sliding window (8)


def _extra_config(arch: str):
    import transformers as tf

    if arch == "mistral":
        return tf.MistralConfig(**_COMMON, head_dim=16, sliding_window=8)
    return tf.Qwen3Config(**_COMMON, head_dim=16)  # qwen3: per-head q/k norm


@pytest.fixture(scope="module")
def extra_models(tmp_path_factory) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for arch in ("mistral", "qwen3"):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(_extra_config(arch), dtype=torch.float32)
        path = tmp_path_factory.mktemp(arch)
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
        out[arch] = path
    return out


@pytest.fixture(params=["llama", "qwen2", "gemma3", "mistral", "qwen3"])
def model_dir(request, tiny_models, extra_models):
    return tiny_models.get(request.param) or extra_models[request.param]


def _reference_logits(model_dir, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(torch.tensor([ids])).logits[0].float()  # (L, V)


def _run(model, kv, items) -> torch.Tensor:
    """All-row logits for scheduled items (rows in batch order)."""
    step = prepare_inputs(items, BLOCK, torch.device("cpu"))
    with torch.inference_mode():
        return model.compute_logits(model(step.input_ids, step.attn, kv.layers))


def _seq(ids: list[int], first_block: int) -> Sequence:
    seq = Sequence(ids)
    seq.block_table = list(range(first_block, first_block + -(-len(ids) // BLOCK)))
    return seq


def test_prefill_chunks_and_decode_match_transformers(model_dir):
    ref = _reference_logits(model_dir, PROMPT)
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"))
    kv = KVCache.allocate(model.spec, 32, BLOCK, torch.float32, torch.device("cpu"))
    seq = _seq(PROMPT, first_block=3)
    got = _run(model, kv, [ScheduledItem(seq, 0, 10, True)])  # prefill of a first chunk
    got2 = _run(model, kv, [ScheduledItem(seq, 10, 5, True)])  # chunk attending to cached context
    steps = [_run(model, kv, [ScheduledItem(seq, p, 1, True)]) for p in range(15, len(PROMPT))]  # decode
    torch.testing.assert_close(torch.cat([got, got2, *steps]), ref, atol=2e-4, rtol=1e-4)


def test_mixed_batch_matches_transformers(model_dir):
    """A decode of one sequence and the prefill of another in one flat batch."""
    other = PROMPT[::-1][:13]
    ref_a, ref_b = _reference_logits(model_dir, PROMPT), _reference_logits(model_dir, other)
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"))
    kv = KVCache.allocate(model.spec, 32, BLOCK, torch.float32, torch.device("cpu"))
    a, b = _seq(PROMPT, 0), _seq(other, 10)
    _run(model, kv, [ScheduledItem(a, 0, 20, True)])
    logits = _run(model, kv, [ScheduledItem(b, 0, 13, True), ScheduledItem(a, 20, 1, True)])
    torch.testing.assert_close(logits[:13], ref_b, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(logits[13], ref_a[20], atol=2e-4, rtol=1e-4)


def test_bf16_weights_stay_close(tiny_models):
    ref = _reference_logits(tiny_models["llama"], PROMPT)
    model, _ = load_model(tiny_models["llama"], torch.bfloat16, torch.device("cpu"))
    assert model.lm_head.weight.dtype == torch.bfloat16
    kv = KVCache.allocate(model.spec, 32, BLOCK, torch.bfloat16, torch.device("cpu"))
    got = _run(model, kv, [ScheduledItem(_seq(PROMPT, 0), 0, len(PROMPT), True)])
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.05)
