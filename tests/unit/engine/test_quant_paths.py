"""The two quantized matmul paths (kernel below the crossover, tiled dequantize + GEMM above it)."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.kv_cache import KVCache
from tunelab.engine.runner import prepare_inputs
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence
from tunelab.models import quant, quant_kernels
from tunelab.models.loader import load_model
from tunelab.models.quant import QuantSpec, QuantWeight
from tiny_models import ARCHS

PROMPT = [(7 * i + 3) % 500 for i in range(40)]
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
KERNEL_ONLY = {"int8": 10**9, "int4": 10**9}
TILED_ONLY = {"int8": 1, "int4": 1}
# Quantized vs exact logits on the tiny random models (|logit| 0.6-1.4, nearly flat), pinned per scheme;
# measured (llama / qwen2 / gemma3): max err int8-all 0.005 / 0.007 / 0.021, int4-all 0.088 / 0.072 / 0.197;
# top-1 agreement int8-all 1.0 / 1.0 / 0.95, int4-all 1.0 / 1.0 / 0.475 (gemma3's logits span only 0.6).
EXACT_TOLERANCE = {"int8-all": (0.03, 0.9), "int4-all": (0.25, 0.4)}


def _logits(model_dir, quantize=None) -> torch.Tensor:
    """fp32 logits (40, vocab) of PROMPT in one prefill step."""
    model, _ = load_model(model_dir, torch.float32, torch.device("cpu"), quantize)
    kv = KVCache.allocate(model.spec, 8, 16, torch.float32, torch.device("cpu"))
    seq = Sequence(PROMPT)
    seq.block_table = [0, 1, 2]
    step = prepare_inputs([ScheduledItem(seq, 0, len(PROMPT), True)], 16, torch.device("cpu"))
    with torch.inference_mode():
        return model.compute_logits(model(step.input_ids, step.attn, kv.layers))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scheme", ["int8-all", "int4-all"])
def test_both_paths_stay_close_to_exact_and_to_each_other(tiny_models, arch, scheme, monkeypatch):
    monkeypatch.setattr(quant_kernels, "enabled", False)  # torch's kernel: ours round activations (test_quant_kernels)
    exact = _logits(tiny_models[arch])
    monkeypatch.setattr(quant, "CROSSOVER", KERNEL_ONLY)
    kernel = _logits(tiny_models[arch], scheme)
    monkeypatch.setattr(quant, "CROSSOVER", TILED_ONLY)
    tiled = _logits(tiny_models[arch], scheme)
    torch.testing.assert_close(tiled, kernel, atol=2e-5, rtol=1e-4)  # same weights, other summation order
    max_err, min_top1 = EXACT_TOLERANCE[scheme]
    assert (tiled - exact).abs().max() < max_err
    assert (tiled.argmax(-1) == exact.argmax(-1)).float().mean() >= min_top1


@pytest.mark.parametrize("spec", ["int8", "int4-g32", "int4-g128"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_matmul_equals_kernel_across_several_tiles(spec, dtype, monkeypatch):
    monkeypatch.setattr(quant_kernels, "enabled", False)  # torch's kernel keeps x exact, as the tiles do
    torch.manual_seed(0)
    monkeypatch.setattr(quant, "TILE_BYTES", 64 * 256 * 4)  # tiles of 64-128 rows: 5 tiles and a remainder
    q = QuantWeight.from_dense(torch.randn(320, 256).to(dtype), QuantSpec.parse(spec))
    x = torch.randn(48, 256).to(dtype)
    ref, got = q.kernel(x).float(), q._tiled_matmul(x).float()  # (48, 320), |y| up to ~60
    # bf16: the tiles round the weight to bf16 before the GEMM, the kernel keeps it in fp32: ~1 ulp of |y|
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert (got - ref).abs().max() <= tol * ref.abs().max()


def test_greedy_tokens_equal_on_both_sides_of_the_crossover(tiny_models, monkeypatch):
    # torch's kernel below the crossover: ours round activations to int8, which flips the tiny models'
    # nearly flat logits; they are pinned in tests/unit/models/test_quant_kernels.py
    monkeypatch.setattr(quant_kernels, "enabled", False)
    prompts = [PROMPT, PROMPT[:9], PROMPT[5:30]]
    outs = {}
    for name, crossover in (("kernel", KERNEL_ONLY), ("tiled", TILED_ONLY)):
        monkeypatch.setattr(quant, "CROSSOVER", crossover)
        llm = LLM(tiny_models["gemma3"], dtype="fp32", max_model_len=128, num_blocks=64, quantize="int4-all")
        outs[name] = [o.token_ids for o in llm.generate(prompts, GREEDY)]
    assert outs["tiled"] == outs["kernel"]


def _run(llm: LLM, prompts, adapters) -> list[Sequence]:
    """Submit all prompts together and step the engine until they finish."""
    seqs = [llm.engine.add_request(i, p, GREEDY, adapter=a)[0] for i, (p, a) in enumerate(zip(prompts, adapters))]
    while llm.engine.has_unfinished():
        llm.engine.step()
    return seqs


def test_mixed_quantized_batch_with_adapter_and_prefix_hit_equals_each_alone(tiny_models, tmp_path, monkeypatch):
    from test_lora import _make_adapter

    monkeypatch.setattr(quant, "CROSSOVER", {"int8": 32, "int4": 32})  # between the solo and batched row counts
    _make_adapter(tiny_models["qwen2"], tmp_path / "a", 1)
    llm = LLM(tiny_models["qwen2"], {"a": tmp_path / "a"}, dtype="fp32", max_model_len=128, num_blocks=64,
              quantize="int4-all")
    _run(llm, [PROMPT], [None])  # caches PROMPT's two full blocks
    prompts = [PROMPT + [11, 12, 13], PROMPT[3:20], PROMPT[::2], PROMPT]
    adapters = [None, "a", "a", None]
    mixed = _run(llm, prompts, adapters)  # 40+ rows in its first step: the tiled path
    assert mixed[0].num_cached_tokens == 32  # the prefix cache answered the first prompt
    alone = [_run(llm, [p], [a])[0] for p, a in zip(prompts[1:3], adapters[1:3])]  # 17 / 20 rows: the kernel
    assert [s.output_ids for s in mixed[1:3]] == [s.output_ids for s in alone]
    llm.engine.scheduler.block_manager.reset_prefix_cache()
    cold = [_run(llm, [p], [a])[0] for p, a in zip(prompts[::3], adapters[::3])]  # no prefix hit
    assert [s.output_ids for s in mixed[::3]] == [s.output_ids for s in cold]
    assert mixed[1].output_ids != _run(llm, [prompts[1]], [None])[0].output_ids  # the adapter is applied
