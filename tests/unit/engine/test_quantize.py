"""Weight-only quantization (int8 per channel, int4 per group) of the lm_head and decoder linears."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.config import EngineConfig
from tunelab.errors import ConfigError
from tunelab.models import quant_kernels
from tunelab.models.layers import Linear
from tunelab.models.quant import INT8_UNDER_INT4, QuantSpec, QuantWeight, RescoredHead

PROMPTS = [[5 + i, 40 + 3 * i, 77, 200 + i] * (1 + i % 3) for i in range(6)]
GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
# Pinned on the tiny random models, whose logits are only ~0.7 in size (real ones are ~10x larger);
# measured: int8 max err 0.0045 / top-1 0.98, int4 (g32) max err 0.055 / top-1 0.86.
TOLERANCE = {"int8": (0.01, 0.95), "int4": (0.1, 0.8)}


def _llm(path, quantize=None) -> LLM:
    return LLM(path, dtype="fp32", max_model_len=128, num_blocks=64, quantize=quantize)


@pytest.fixture(scope="module")
def exact(tiny_models) -> LLM:
    return _llm(tiny_models["gemma3"])


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_logits_stay_close_and_embedding_stays_exact(tiny_models, exact, scheme):
    quant = _llm(tiny_models["gemma3"], scheme)
    hidden = torch.randn(64, exact.engine.model.spec.hidden_size, generator=torch.Generator().manual_seed(0))
    ref, got = exact.engine.model.compute_logits(hidden), quant.engine.model.compute_logits(hidden)
    max_err, min_top1 = TOLERANCE[scheme]
    assert (got - ref).abs().max() < max_err
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= min_top1
    # tied weights: only the output projection is quantized, the input embedding is untouched
    model = quant.engine.model
    assert torch.equal(model.model.embed_tokens.weight, exact.engine.model.model.embed_tokens.weight)
    assert "lm_head.weight" not in dict(model.named_parameters())
    assert model.model.layers[0].mlp.down_proj.qweight is None  # decoder linears only with -all


def test_int8_greedy_tokens_mostly_agree(tiny_model):
    ref = [o.token_ids for o in _llm(tiny_model).generate(PROMPTS, GREEDY)]
    got = [o.token_ids for o in _llm(tiny_model, "int8-all").generate(PROMPTS, GREEDY)]
    same = sum(a == b for r, g in zip(ref, got) for a, b in zip(r, g))
    assert same / sum(map(len, ref)) >= 0.8  # measured 0.88-1.0 on the three tiny families


def test_int4_all_quantizes_every_decoder_linear_as_the_mixture(tiny_models):
    llm = _llm(tiny_models["qwen2"], "int4-g64-all")
    linears = {n: m for n, m in llm.engine.model.named_modules() if isinstance(m, Linear)}
    assert linears and all(m.qweight is not None for m in linears.values())
    schemes = {n: (m.qweight.spec.scheme, m.qweight.spec.group_size) for n, m in linears.items()}
    int8 = {n for n in schemes if n.rpartition(".")[2] in INT8_UNDER_INT4}
    assert int8 and all(schemes[n][0] == "int8" for n in int8)
    assert all(schemes[n] == ("int4", 64) for n in set(schemes) - int8)
    out = llm.generate(PROMPTS[:2], GREEDY)
    assert [len(o.token_ids) for o in out] == [16, 16]


@pytest.mark.parametrize("spec", ["int8", "int4-g32", "int4-g64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_its_dequantized_weight_within_one_step(spec, dtype, monkeypatch):
    # torch's kernel, exact on the dequantized weight; ours round activations to int8 (tests/unit/models/test_quant_kernels.py)
    monkeypatch.setattr(quant_kernels, "enabled", False)
    torch.manual_seed(0)
    w = torch.randn(96, 128).to(dtype)
    q = QuantWeight.from_dense(w, QuantSpec.parse(spec))
    deq = q.dequantize().float()
    g = 128 if spec == "int8" else q.spec.group_size
    rows = w.float().view(96, -1, g)
    bf16 = 1e-2 if dtype == torch.bfloat16 else 1e-6
    if spec == "int8":  # rounding error is at most half a quantization step: max|w|/127 per row
        err = (deq.view(96, -1, g) - rows).abs().amax(-1)
        assert (err <= rows.abs().amax(-1) / 127 * 0.505 + bf16).all()
    else:  # the fitted grid's squared error per group is no worse than min-max's (range/15 steps)
        lo, step = rows.amin(-1, keepdim=True), (rows.amax(-1, keepdim=True) - rows.amin(-1, keepdim=True)) / 15
        minmax = ((rows - lo) / step).round().clamp(0, 15) * step + lo
        fitted, plain = (deq.view(96, -1, g) - rows).square().sum(-1), (minmax - rows).square().sum(-1)
        assert (fitted <= plain * 1.001 + bf16 * g * step.squeeze(-1)).all()
        assert fitted.sum() < 0.97 * plain.sum()  # measured 0.9x on gaussian weights
    x = torch.randn(5, 128).to(dtype)
    tol = dict(rtol=2e-2, atol=0.1) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-4)  # bf16 output rounding
    assert torch.allclose(q.matmul(x).float(), x.float() @ deq.T, **tol)


@pytest.mark.parametrize("value", ["int3", "fp8", "int8-g64", "int4-g48", "INT4"])
def test_unknown_quantize_value_names_the_field(value):
    with pytest.raises(ConfigError, match="quantize"):
        EngineConfig(quantize=value)
    with pytest.raises(ConfigError, match="quantize"):
        QuantSpec.parse(value)


def test_int4_on_a_device_without_kernel_errors_clearly():
    w = torch.zeros(64, 64, device="meta")
    with pytest.raises(ConfigError, match="quantize: int4 has a kernel only on CPU"):
        QuantWeight.from_dense(w, QuantSpec.parse("int4"))


def test_int4_group_must_divide_input_size():
    with pytest.raises(ConfigError, match="not a multiple of the int4 group size 128"):
        QuantWeight.from_dense(torch.randn(32, 64), QuantSpec.parse("int4-g128"))


def test_lora_and_dora_adapters_run_on_quantized_linears(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"], dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False, use_dora=True)
    get_peft_model(base, cfg).save_pretrained(tmp_path)
    exact = LLM(tiny_models["qwen2"], {"d": tmp_path}, dtype="fp32", max_model_len=128, num_blocks=64)
    quant = LLM(tiny_models["qwen2"], {"d": tmp_path}, dtype="fp32", max_model_len=128, num_blocks=64,
                quantize="int8-all")  # DoRA row norms come from the dequantized weights
    ref = [o.token_ids for o in exact.generate(PROMPTS, GREEDY, adapter="d")]
    got = [o.token_ids for o in quant.generate(PROMPTS, GREEDY, adapter="d")]
    plain = [o.token_ids for o in quant.generate(PROMPTS, GREEDY)]
    same = sum(a == b for r, g in zip(ref, got) for a, b in zip(r, g)) / sum(map(len, ref))
    assert same >= 0.8 and got != plain  # the adapter is applied on top of the quantized base


def test_rescored_head_is_exact_on_its_top_logits_and_int4_elsewhere():
    torch.manual_seed(0)
    w, x = torch.randn(640, 64), torch.randn(3, 64)
    q = QuantWeight.from_dense(w, QuantSpec.parse("int4"))
    head = RescoredHead(q, w, top=8)
    approx, exact, got = q.matmul(x), x @ w.T, head.matmul(x)
    top = approx.topk(8, dim=1).indices
    rescored = torch.zeros_like(got, dtype=torch.bool).scatter_(1, top, True)
    assert torch.allclose(got[rescored], exact[rescored], atol=1e-5)
    assert torch.equal(got[~rescored], approx[~rescored])
    assert (approx - exact).abs().max() > 1e-2  # the int4 logits do differ from the exact ones
