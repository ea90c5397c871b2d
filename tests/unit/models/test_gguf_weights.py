"""A GGUF's quantized tensors loaded as they are (models.gguf_blocks / gguf_weights) equal gguf-py's
dequantization, and the engine on them computes the logits of the dequantized float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tunelab.export.gguf  # noqa: F401  (export.quantize is imported through it)
from tunelab.export.quantize import encode
from tunelab.models import quant_kernels
from tunelab.models.gguf_blocks import LAYOUTS, decode
from tunelab.models.quant import QuantSum, QuantWeight

ROWS, COLS = 128, 512


def _weight(qtype: str, dtype: torch.dtype = torch.float32):
    """Random rows quantized by our exporter, as our engine weight and gguf-py's dequantized floats."""
    import gguf

    w = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32) * 0.05
    raw = encode(w, qtype)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]).reshape(ROWS, COLS)
    codes, scale, offset = decode(qtype, raw, ROWS, COLS)
    if offset is not None:
        return QuantWeight.from_codes(codes, scale, offset, dtype), ref
    return QuantSum.nibbles(codes, scale, dtype), ref


@pytest.mark.parametrize("qtype", sorted(LAYOUTS))
def test_dequantized_weights_equal_gguf_py(qtype):
    ours, ref = _weight(qtype)
    got = ours.dequantize().numpy()
    # Q4_K's minimum is subtracted in one rounding (scale * q - offset), so equal to fp32 rounding
    np.testing.assert_allclose(got, ref, rtol=0, atol=np.abs(ref).max() * 2 ** -23 * 2)
    if qtype != "Q4_K":
        assert np.array_equal(got, ref)  # a scale times a small integer: exact in fp32


@pytest.mark.parametrize("qtype", sorted(LAYOUTS))
@pytest.mark.parametrize("rows", [1, 5, 80])  # the kernel and the tiled path (int4 crossover is 64)
def test_matmul_equals_dequantized_matmul(qtype, rows, monkeypatch):
    # the weights exactly, through torch's kernel (ours round activations to int8: test_quant_kernels.py)
    monkeypatch.setattr(quant_kernels, "enabled", False)
    ours, ref = _weight(qtype)
    x = torch.randn(rows, COLS, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours.matmul(x), x @ torch.from_numpy(ref).T, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory, tiny_tokenizer_dir):
    """A 256-wide Gemma 3 written by our exporter as Q4_K_M (Q4_K, Q6_K, and the 32-value fallbacks)."""
    from helpers.wide_model import build_wide_model

    from tunelab.export.gguf import write_gguf

    root = tmp_path_factory.mktemp("gguf_direct")
    source = build_wide_model("gemma3", root / "src", tiny_tokenizer_dir)
    return write_gguf(source, root / "model.gguf", "q4_k_m", log=lambda _m: None)


def test_engine_on_gguf_tensors_matches_the_dequantized_model(gemma_gguf, tmp_path, monkeypatch):
    import gguf

    from tunelab.engine import LLM, SamplingParams
    from tunelab.models.layers import Linear
    from tunelab.store.import_gguf import import_gguf

    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(quant_kernels, "enabled", False)  # the same bits exactly: torch's kernel keeps x exact
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(gemma_gguf)).tensors}
    assert {"Q4_K", "Q6_K"} <= types
    floats = tmp_path / "floats"
    floats.mkdir()
    import_gguf(gemma_gguf, floats)  # the fp32 detour: gguf-py's dequantized values
    direct, exact = (LLM(p, dtype="fp32", max_model_len=128, num_blocks=32) for p in (gemma_gguf, floats))
    decoder = [m for n, m in direct.engine.model.named_modules() if isinstance(m, Linear) and ".layers." in n]
    assert decoder and all(m.qweight is not None for m in decoder)
    prompts = [[2, 17 + i, 40, 99, 7 * i + 3] * (1 + i) for i in range(3)]
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, logprobs=0, prompt_logprobs=0)
    got, ref = direct.generate(prompts, params, use_tqdm=False), exact.generate(prompts, params, use_tqdm=False)
    for g, r in zip(got, ref):
        assert g.token_ids == r.token_ids
        lp_g = [t.logprob for t in g.prompt_logprobs[1:]]
        lp_r = [t.logprob for t in r.prompt_logprobs[1:]]
        np.testing.assert_allclose(lp_g, lp_r, atol=1e-3)  # fp32 rounding of a different summation order


def test_requantizing_gguf_weights_is_an_error(gemma_gguf):
    from tunelab.errors import ConfigError
    from tunelab.models.gguf_weights import check_gguf_load

    with pytest.raises(ConfigError, match="own quantized tensors"):
        check_gguf_load("int4", torch.device("cpu"), gemma_gguf)
    with pytest.raises(ConfigError, match="CPU only"):
        check_gguf_load(None, torch.device("cuda"), gemma_gguf)
