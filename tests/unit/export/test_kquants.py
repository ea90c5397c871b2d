"""K-quants in numpy: gguf-py's dequantizer reads them back, and llama.cpp's mixture rules."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from tunelab.export.gguf.kquants import quantize_k  # noqa: E402
from tunelab.export.gguf.mixture import model_facts, tensor_type, use_more_bits  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.export.quantize import QUANTS  # noqa: E402

# Relative RMS error of each type on Gaussian weights (pinned; Q4_0/Q5_0 for comparison).
MAX_ERROR = {"Q4_K": 0.065, "Q5_K": 0.033, "Q6_K": 0.017}


def _weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 512)) * 0.02).astype(np.float32)
    x[0, :256] = 0.0  # an all-zero block
    x[1, :256] = 0.5  # a constant block
    x[2, :256] = np.abs(x[2, :256])  # all positive: the min clamps to zero
    return x


def _round_trip(x: np.ndarray, qtype: str) -> np.ndarray:
    kind = gguf.GGMLQuantizationType[qtype]
    blocks = quantize_k(x, qtype)
    assert blocks.shape == (x.shape[0], x.shape[1] // 256 * gguf.GGML_QUANT_SIZES[kind][1])
    return gguf.quants.dequantize(blocks, kind).reshape(x.shape)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K"])
def test_round_trip_through_gguf_dequantize(qtype):
    x = _weights()
    back = _round_trip(x, qtype)
    error = np.sqrt(np.mean((back - x) ** 2) / np.mean(x**2))
    assert error < MAX_ERROR[qtype]
    assert np.all(back[0, :256] == 0)
    np.testing.assert_allclose(back[1, :256], 0.5, atol=2e-3)
    assert np.abs(back[2, :256] - x[2, :256]).max() < 0.1 * np.abs(x[2, :256]).max()


def test_more_bits_beat_fewer():
    x = _weights()
    errors = [np.mean((_round_trip(x, q) - x) ** 2) for q in ("Q4_K", "Q5_K", "Q6_K")]
    q4_0 = gguf.quants.dequantize(gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_0),
                                  gguf.GGMLQuantizationType.Q4_0).reshape(x.shape)
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] < np.mean((q4_0 - x) ** 2)  # same 4 bits, better than the 32-block type


def test_use_more_bits_matches_llama_cpp_layers():
    # Gemma 3 270M has 18 layers: llama.cpp's Q4_K_M gives these attn_v/ffn_down Q6_K.
    assert [i for i in range(18) if use_more_bits(i, 18)] == [0, 1, 4, 7, 10, 13, 15, 16, 17]


def test_mixture_rules():
    names = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{t}.weight" for i in range(8) for t in ("attn_v", "ffn_down", "attn_q", "attn_norm")]
    tied = model_facts(names, 8, "gemma3")
    m, s, q6 = QUANTS["q4_k_m"], QUANTS["q4_k_s"], QUANTS["q6_k"]
    assert tensor_type(m, tied, "token_embd.weight", (512, 256)) == "Q6_K"  # tied head
    assert tensor_type(m, tied, "token_embd.weight", (512, 640)) == "Q8_0"  # rows fit no 256 block
    assert tensor_type(m, tied, "blk.0.attn_norm.weight", (256,)) == "F32"
    assert [tensor_type(m, tied, f"blk.{i}.attn_v.weight", (64, 256)) for i in range(8)] == \
        ["Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q6_K"]
    assert [tensor_type(s, tied, f"blk.{i}.ffn_down.weight", (256, 512)) for i in range(3)] == \
        ["Q5_K", "Q4_K", "Q4_K"]
    assert tensor_type(s, tied, "blk.5.attn_v.weight", (64, 256)) == "Q4_K"
    assert tensor_type(q6, tied, "blk.2.attn_q.weight", (256, 256)) == "Q6_K"
    assert tensor_type(m, tied, "blk.2.attn_q.weight", (256, 640)) == "Q5_0"  # llama.cpp's fallback
    assert tensor_type(QUANTS["q5_k_m"], tied, "blk.2.attn_q.weight", (256, 640)) == "Q5_1"
    assert tensor_type(q6, tied, "blk.2.attn_q.weight", (256, 640)) == "Q8_0"
    assert tensor_type(m, tied, "blk.2.attn_q.weight", (256, 100)) == "F16"
    untied = model_facts(names + ["output.weight"], 8, "llama")
    assert tensor_type(m, untied, "token_embd.weight", (512, 256)) == "Q4_K"
    assert tensor_type(m, untied, "output.weight", (512, 256)) == "Q6_K"


def test_wide_model_exports_every_k_quant(tmp_path, tiny_tokenizer_dir):
    from helpers.wide_model import build_wide_model

    model = build_wide_model("qwen2", tmp_path / "wide", tiny_tokenizer_dir)
    sizes = {}
    for quant in ("q4_k_s", "q4_k_m", "q5_k_m", "q6_k"):
        out = write_gguf(model, tmp_path / f"{quant}.gguf", quant, log=lambda _m: None)
        tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
        sizes[quant] = out.stat().st_size
        for t in tensors.values():  # every tensor decodes to its shape
            assert gguf.quants.dequantize(t.data, t.tensor_type).size == int(np.prod(t.shape))
    assert sizes["q4_k_s"] < sizes["q4_k_m"] < sizes["q5_k_m"] < sizes["q6_k"]
