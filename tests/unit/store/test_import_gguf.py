"""GGUF import: weights, config and tokenizer match the source model and transformers' loader."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.errors import CorruptModelFile, TunelabError
from tunelab.store.import_gguf import import_gguf

# Every tensor type once (dequantization does not depend on the architecture), every
# architecture's names and fix-ups at least twice; F32 is covered by the round-trip test.
PARITY_CASES = [("llama", "F16"), ("llama", "BF16"), ("llama", "Q4_0"), ("llama", "Q4_K"),
                ("llama", "Q6_K"), ("qwen2", "Q8_0"), ("qwen2", "Q4_K"), ("gemma3", "Q8_0"), ("gemma3", "Q6_K")]
PROMPTS = torch.tensor([[1, 20, 30, 40, 50, 60], [7, 300, 2, 90, 91, 92]])


def _load(path, **kw):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw).eval()


@pytest.fixture
def imported(make_gguf, tmp_path):
    def run(arch, qtype, **kw):
        gguf = make_gguf(arch, qtype)
        out = tmp_path / f"{arch}-{qtype}"
        out.mkdir()
        import_gguf(gguf, out, **kw)
        return gguf, out

    return run


@pytest.mark.parametrize("arch,qtype", PARITY_CASES)
def test_import_matches_transformers_gguf_loader(imported, arch, qtype):
    gguf, out = imported(arch, qtype)
    mine, ref = _load(out), _load(gguf.parent, gguf_file=gguf.name)
    ours, theirs = mine.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:  # same dequantization and the same inverse fix-ups, bit for bit
        assert torch.equal(ours[name], theirs[name]), name
    with torch.no_grad():
        assert torch.equal(mine(PROMPTS).logits, ref(PROMPTS).logits)
        greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(mine.generate(PROMPTS, **greedy), ref.generate(PROMPTS, **greedy))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f32_import_round_trips_the_original_model(imported, gguf_hf_models, arch):
    """Independent of transformers: HF -> llama.cpp-style GGUF -> import gives the HF model back."""
    _, out = imported(arch, "F32")
    original, back = _load(gguf_hf_models[arch]), _load(out)
    for name, value in original.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    cfg_a, cfg_b = original.config.to_dict(), back.config.to_dict()
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_parameters",
                "head_dim", "layer_types", "query_pre_attn_scalar", "sliding_window", "bos_token_id",
                "eos_token_id", "pad_token_id"):
        assert cfg_b.get(key) == cfg_a.get(key), key


def test_quantized_import_stays_close_to_the_original(imported, gguf_hf_models):
    _, out = imported("gemma3", "Q8_0")
    original, back = _load(gguf_hf_models["gemma3"]), _load(out)
    with torch.no_grad():
        a, b = original(PROMPTS).logits, back(PROMPTS).logits
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_tokenizer_is_converted_once_to_tokenizer_json(imported, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    _, out = imported("qwen2", "Q8_0")
    assert (out / "tokenizer.json").is_file()
    ours, original = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    for text in ["Hello, who are you?", "你好，今天天气很好。 🙂", "<|im_start|>user\nhi<|im_end|>\n"]:
        assert ours.encode(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False)
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(messages, tokenize=False)
    assert ours.eos_token == "<|im_end|>" and ours.pad_token == "<pad>"
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == original.eos_token_id


def test_bfloat16_import_halves_the_weights(imported):
    from tunelab.store.weights import summarize

    _, f32 = imported("llama", "Q8_0")
    _, bf16 = imported("llama", "F16", dtype="bfloat16")
    assert summarize(bf16).dtype == "bfloat16" and summarize(f32).dtype == "float32"
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(bf16) < 0.55 * size(f32)
    a, b = _load(f32).state_dict(), _load(bf16).state_dict()
    torch.testing.assert_close(b["model.layers.0.mlp.up_proj.weight"], a["model.layers.0.mlp.up_proj.weight"],
                               rtol=0.02, atol=0.01)


def test_unknown_dtype_is_rejected(make_gguf, tmp_path):
    with pytest.raises(TunelabError, match="dtype"):
        import_gguf(make_gguf("llama", "Q8_0"), tmp_path, dtype="int3")


@pytest.mark.parametrize("cut", ["header", "data", "garbage"])
def test_corrupt_gguf_names_the_file(make_gguf, tmp_path, cut):
    data = make_gguf("llama", "Q8_0").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"header": data[:200], "data": data[:-5000], "garbage": b"GGUF" + b"\x07" * 4000}[cut])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CorruptModelFile, match="bad.gguf"):
        import_gguf(bad, out)
    assert list(out.iterdir()) == []


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(str(path), "phi2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(TunelabError, match="phi2.*not supported"):
        import_gguf(path, tmp_path)
