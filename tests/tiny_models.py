"""Tiny random models (2 layers, hidden 64) for the three families, built from configs.

Weights come from a fixed seed, so pinned numbers in tests stay stable.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
TOKENIZER_DIR = ASSETS / "tiny_tokenizer"
VOCAB = 512
ARCHS = ("llama", "qwen2", "gemma3")

_COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    rms_norm_eps=1e-6, tie_word_embeddings=True,
)


def tiny_config(arch: str):
    """A transformers config for `arch` in ('llama', 'qwen2', 'gemma3')."""
    import transformers as tf

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    ids = dict(bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "llama":
        return tf.LlamaConfig(**_COMMON, **ids, head_dim=16)
    if arch == "qwen2":
        return tf.Qwen2Config(**_COMMON, **ids)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(
            **_COMMON, **ids, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"],
        )
    raise ValueError(f"unknown tiny arch {arch}")


def build_tiny_model(arch: str, out: Path, seed: int = 0) -> Path:
    """Save a random tiny `arch` model plus the tiny tokenizer to `out`; return `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(out)
    return out
