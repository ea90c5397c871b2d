"""int8 KV cache (kv_cache_dtype=int8): agreement with the model-dtype cache, memory, config."""

from __future__ import annotations

import pytest
import torch

from tunelab.cli import parse
from tunelab.config_flags import config_from_args
from tunelab.engine import LLM, SamplingParams
from tunelab.engine.config import EngineConfig
from tunelab.engine.kv_cache import bytes_per_block
from tunelab.errors import ConfigError
from tunelab.models.kv_int8 import Int8Rows, allocate
from tunelab.serve.config import ServeConfig

PROMPTS = [[5 + i, 40 + 3 * i, 77, 200 + i] * (1 + i % 3) for i in range(6)]
GREEDY = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
# Greedy tokens equal to the bf16 cache's, at the same position, over 6 prompts x 32 tokens; measured:
# llama 192/192, qwen2 192/192, gemma3 120/192 (its tiny random logits span only 0.6: near-ties flip).
MIN_AGREEMENT = {"llama": 1.0, "qwen2": 1.0, "gemma3": 0.55}


def _llm(path, **kw) -> LLM:
    return LLM(path, dtype="bf16", max_model_len=256, **kw)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_int8_cache_greedy_agrees_with_the_bf16_cache(tiny_models, arch):
    ref = [o.token_ids for o in _llm(tiny_models[arch], num_blocks=64).generate(PROMPTS, GREEDY, use_tqdm=False)]
    llm = _llm(tiny_models[arch], num_blocks=64, kv_cache_dtype="int8")
    got = [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
    same = sum(a == b for r, g in zip(ref, got) for a, b in zip(r, g))
    assert same / sum(map(len, ref)) >= MIN_AGREEMENT[arch]
    assert llm.engine.kv.layers[0][0].dtype == torch.int8


def test_int8_cache_batch_equals_each_alone(tiny_models):
    llm = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=256, num_blocks=64, kv_cache_dtype="int8")
    batched = [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
    llm.engine.scheduler.block_manager.reset_prefix_cache()
    alone = [llm.generate([p], GREEDY, use_tqdm=False)[0].token_ids for p in PROMPTS]
    assert batched == alone  # a token's bytes and scale depend on that token alone


def test_int8_cache_fits_more_blocks_in_the_same_budget(tiny_models):
    budget = dict(cpu_kv_cache_gb=0.001, max_num_seqs=512)
    plain, small = _llm(tiny_models["llama"], **budget), _llm(tiny_models["llama"], kv_cache_dtype="int8", **budget)
    spec = plain.engine.model.spec  # head_dim 16: 32 bytes per head in bf16, 16 + a 4-byte scale in int8
    assert small.engine.config.num_blocks == int(0.001 * 2**30 // bytes_per_block(spec, 16, torch.bfloat16, "int8"))
    assert small.engine.config.num_blocks / plain.engine.config.num_blocks == pytest.approx(32 / 20, rel=0.01)
    spec.head_dim = 256  # Gemma 3's heads: 512 bytes vs 260, 1.97x the blocks
    ratio = bytes_per_block(spec, 16, torch.bfloat16) / bytes_per_block(spec, 16, torch.bfloat16, "int8")
    assert ratio == pytest.approx(512 / 260)


def test_int8_rows_round_trip_within_half_a_step():
    torch.manual_seed(0)
    k, _, ks, _ = allocate((4, 8, 2, 64), torch.device("cpu"))
    rows = Int8Rows(k, ks, torch.float32)
    x = torch.randn(5, 2, 64) * torch.tensor([0.01, 30.0])[None, :, None]  # heads of very different size
    slots = torch.tensor([3, 9, 10, 17, 31])
    rows[slots] = x
    step = x.abs().amax(-1, keepdim=True) / 127  # (5, 2, 1)
    assert ((rows[slots] - x).abs() <= step / 2 + 1e-7).all()
    assert rows[torch.tensor([[3, 9], [0, 1]])].shape == (2, 2, 2, 64)


def test_kv_cache_dtype_is_validated_and_reaches_llm_and_serve():
    with pytest.raises(ConfigError, match="kv_cache_dtype: 'fp8' is not one of auto, int8"):
        EngineConfig(kv_cache_dtype="fp8")
    serve = config_from_args(ServeConfig, parse(["serve", "m", "--set", "kv_cache_dtype=int8"]))
    assert serve.engine.kv_cache_dtype == "int8"


def test_int8_cache_refuses_a_gpu_at_the_edge(tiny_models):
    with pytest.raises(ConfigError, match="kv_cache_dtype: int8 runs on CPU only"):
        _llm(tiny_models["llama"], kv_cache_dtype="int8", device="meta")


def test_memory_planner_counts_the_int8_cache():
    from tunelab.plan import estimate_serving, model_shape, parse_device

    shape, _ = model_shape("llama3-8b")
    est = estimate_serving(shape, parse_device("cuda:24GiB"), context=8192, kv_cache_dtype="int8")
    assert est.kv_per_token == 2 * 32 * 8 * (128 + 4)  # keys+values x layers x kv heads x (int8 values + scale)
