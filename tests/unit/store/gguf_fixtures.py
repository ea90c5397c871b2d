"""Tiny GGUF files written the way llama.cpp's converter writes them, for import tests.

This is an independent, test-only HF -> GGUF writer: it spells out llama.cpp's tensor
names and value changes (llama q/k rope permutation, Gemma norms stored as 1 + w) so
the importer's inverse can be checked against it and against transformers' loader.

The models are 2 layers with hidden size 256: K-quants pack 256 values per block, so
every matrix's row must be a multiple of 256 for Q4_K/Q6_K to apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}
# HF suffix -> llama.cpp block tensor name; gemma3's four norms differ from llama's two.
_BLOCK = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_NORMS = {
    "llama": {"post_attention_layernorm": "ffn_norm"},
    "qwen2": {"post_attention_layernorm": "ffn_norm"},
    "gemma3": {"pre_feedforward_layernorm": "ffn_norm", "post_attention_layernorm": "post_attention_norm",
               "post_feedforward_layernorm": "post_ffw_norm"},
}
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# Bytes per block and where its fp16 scale(s) sit, for K-quants gguf-py cannot quantize.
_K_BLOCKS = {"Q4_K": (144, {0: 0.01, 2: 0.005}), "Q6_K": (210, {208: 0.001})}


def gguf_test_config(arch: str, tokenizer_ids: dict):
    """A 2-layer, hidden-256 config; llama unties its output head to cover `output.weight`."""
    import transformers as tf

    common = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                  rms_norm_eps=1e-6, **tokenizer_ids)
    if arch == "llama":
        return tf.LlamaConfig(**common, tie_word_embeddings=False, head_dim=128)
    if arch == "qwen2":
        return tf.Qwen2Config(**common, tie_word_embeddings=True)
    return tf.Gemma3TextConfig(**common, tie_word_embeddings=True, head_dim=256,
                               query_pre_attn_scalar=256, sliding_window=8)


def gguf_name(arch: str, hf: str) -> str:
    """llama.cpp's name for HF tensor `hf`."""
    stem, kind = hf.rsplit(".", 1)
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{kind}"
    _, _, layer, rest = stem.split(".", 3)
    part = _BLOCK.get(rest) or _NORMS[arch][rest]
    return f"blk.{layer}.{part}.{kind}"


def to_gguf_values(arch: str, hf: str, w: np.ndarray, config) -> np.ndarray:
    """llama.cpp's value changes: rope permutation (llama q/k), 1 + w (gemma norms)."""
    if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
        heads = config.num_attention_heads if ".q_proj." in hf else config.num_key_value_heads
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    if arch == "gemma3" and hf.endswith("norm.weight"):
        return w + np.float32(1.0)
    return w


def write_gguf(model_dir: Path, out: Path, qtype: str, seed: int = 0) -> Path:
    """Write the HF model in `model_dir` as a GGUF whose matrices are stored as `qtype`."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    arch = GGUF_ARCH[config["model_type"]]
    cfg = _config_obj(model_dir)
    writer = gguf.GGUFWriter(str(out), arch)
    _write_hparams(writer, arch, cfg)
    _write_tokenizer(writer, model_dir, cfg)
    rng = np.random.default_rng(seed)
    for hf, w in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        w = to_gguf_values(arch, hf, w.astype(np.float32), cfg)
        _add_tensor(writer, gguf_name(arch, hf), w, qtype if w.ndim == 2 else "F32", rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _config_obj(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def _write_hparams(writer, arch: str, cfg) -> None:
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
    writer.add_rope_freq_base(rope["rope_theta"])
    if arch == "llama":
        writer.add_rope_dimension_count(cfg.head_dim)
    if arch == "gemma3":
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
        writer.add_sliding_window(cfg.sliding_window)


def _write_tokenizer(writer, model_dir: Path, cfg) -> None:
    """The tiny byte-level BPE, as llama.cpp stores a GPT-2 style vocabulary."""
    import gguf

    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = {i: t for t, i in tok["model"]["vocab"].items()}
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    tokens = [vocab.get(i, f"[PAD{i}]") for i in range(cfg.vocab_size)]
    types = [gguf.TokenType.CONTROL if i in special else
             gguf.TokenType.NORMAL if i in vocab else gguf.TokenType.UNUSED for i in range(cfg.vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_add_bos_token(False)
    template = model_dir / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())


def _add_tensor(writer, name: str, w: np.ndarray, qtype: str, rng) -> None:
    import gguf

    kind = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
    elif qtype == "F16":
        writer.add_tensor(name, w.astype(np.float16))
    elif qtype in _K_BLOCKS:
        writer.add_tensor(name, _random_k_blocks(w.shape, qtype, rng), raw_dtype=kind)
    else:
        writer.add_tensor(name, gguf.quants.quantize(w, kind), raw_dtype=kind)


def _random_k_blocks(shape: tuple[int, ...], qtype: str, rng) -> np.ndarray:
    """Valid K-quant blocks with random codes and small fixed scales (gguf-py cannot quantize
    K-quants, and the import only needs to dequantize them as transformers does)."""
    size, scales = _K_BLOCKS[qtype]
    blocks = rng.integers(0, 256, size=(shape[0] * shape[1] // 256, size), dtype=np.uint8)
    for offset, value in scales.items():
        blocks[:, offset:offset + 2] = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)
    return blocks.reshape(shape[0], -1)
