"""GGUF files: llama.cpp names and metadata, weight fixes, and refusals before writing."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from tunelab.export.errors import ExportError, UnsupportedArchitecture  # noqa: E402
from tunelab.export.exporter import export  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.models.gguf_families import permute_rope  # noqa: E402


def _fields(path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def _hf(model_dir, name) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))[name]


def test_llama_metadata_tokenizer_and_rope_permutation(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    out = write_gguf(tiny_models["llama"], tmp_path / "l.gguf", "f16", log=lambda _m: None)
    fields, tensors = _fields(out)
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"]) == 512  # padded to the embedding rows
    assert fields["tokenizer.ggml.tokens"][511] == "[PAD511]"
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.eot_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert len(fields["tokenizer.ggml.merges"]) > 100
    assert "output.weight" not in tensors  # tied embeddings
    q = np.asarray(tensors["blk.0.attn_q.weight"].data, dtype=np.float32).reshape(64, 64)
    expected = permute_rope(_hf(tiny_models["llama"], "model.layers.0.self_attn.q_proj.weight"), 4)
    np.testing.assert_allclose(q, expected, atol=1e-3)


def test_gemma3_norms_shift_by_one_and_swa_pattern(tiny_models, tmp_path):
    out = write_gguf(tiny_models["gemma3"], tmp_path / "g.gguf", "q8_0", log=lambda _m: None)
    fields, tensors = _fields(out)
    assert fields["general.architecture"] == "gemma3"
    assert fields["gemma3.attention.sliding_window"] == 8
    assert fields["gemma3.attention.sliding_window_pattern"] == [True, False]
    assert fields["gemma3.rope.freq_base"] == 1_000_000.0
    norm = np.asarray(tensors["blk.0.post_attention_norm.weight"].data)
    hf = _hf(tiny_models["gemma3"], "model.layers.0.post_attention_layernorm.weight")
    np.testing.assert_allclose(norm, hf + 1.0, atol=1e-6)
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_q_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_qwen2_keeps_biases_and_q4_0(tiny_models, tmp_path):
    out = write_gguf(tiny_models["qwen2"], tmp_path / "q.gguf", "q4_0", log=lambda _m: None)
    fields, tensors = _fields(out)
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and fields["general.file_type"] == 2
    assert "blk.1.attn_q.bias" in tensors
    assert tensors["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0


def test_unsupported_architecture_fails_before_writing(tmp_path):
    model = tmp_path / "gpt2-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    out = tmp_path / "out" / "x.gguf"
    with pytest.raises(UnsupportedArchitecture, match="model_type 'gpt2'.*supported: .*llama"):
        export(str(model), "gguf", "f16", out)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_quant_lists_valid_ones(tiny_models, tmp_path):
    with pytest.raises(ExportError, match="unknown quant type 'q3_xl'; valid: f16, bf16, q8_0"):
        write_gguf(tiny_models["llama"], tmp_path / "x.gguf", "q3_xl")
    assert not list(tmp_path.iterdir())


def test_k_quant_needs_no_llama_cpp(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if not installed
    out = write_gguf(tiny_models["llama"], tmp_path / "x.gguf", "q4_k_m", log=lambda _m: None)
    fields, tensors = _fields(out)
    assert fields["general.file_type"] == 15
    # hidden 64 fits no 256-value block: llama.cpp's fallback (Q4_K -> Q5_0) and Q8_0 for the head
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q5_0
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_exporting_a_run_merges_it_first(tiny_runs, tmp_path):
    result = export(str(tiny_runs["qwen2"]), "gguf", "f16", tmp_path / "run.gguf", log=lambda _m: None)
    _, tensors = _fields(result.gguf)
    base_file = write_gguf(_base(tiny_runs["qwen2"]), tmp_path / "base.gguf", "f16", log=lambda _m: None)
    base = gguf.GGUFReader(str(base_file)).tensors
    base_q = next(t for t in base if t.name == "blk.0.attn_q.weight")
    assert not np.allclose(np.asarray(tensors["blk.0.attn_q.weight"].data, dtype=np.float32),
                           np.asarray(base_q.data, dtype=np.float32))


def _base(run_dir):
    from pathlib import Path

    return Path(json.loads((run_dir / "status.json").read_text())["base_model"])
