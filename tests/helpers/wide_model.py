"""Tiny models whose rows fit K-quant super-blocks (hidden 256), for GGUF quant tests.

The session's tiny models are 64 wide, so every K-quant there falls back to a 32-value
type; these are 256 wide with 4 layers, so Q4_K/Q5_K/Q6_K and the per-layer bumps apply.
llama and gemma3 get their real families' tokenizer habits (a BOS the tokenizer adds, the
template writing it, Gemma's turn markers), so GGUF round trips cover them.
"""

from __future__ import annotations

from pathlib import Path


_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
    "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_CHATML_BOS = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_TOKENIZER_HABITS = {
    "llama": dict(bos_token="<|begin_of_text|>", add_bos_token=True, chat_template=_CHATML_BOS),
    "gemma3": dict(bos_token="<bos>", eos_token="<eos>", add_bos_token=True, chat_template=_GEMMA_TEMPLATE),
}


def build_wide_model(arch: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a random 4-layer hidden-256 `arch` model (llama/qwen2/qwen3/gemma3) to `out`."""
    import torch
    import transformers as tf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, **_TOKENIZER_HABITS.get(arch, {}))
    common = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  rms_norm_eps=1e-6, bos_token_id=tok.bos_token_id or tok.convert_tokens_to_ids("<|endoftext|>"),
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    configs = {
        "llama": lambda: tf.LlamaConfig(**common, tie_word_embeddings=False, head_dim=64),
        "qwen2": lambda: tf.Qwen2Config(**common, tie_word_embeddings=True),
        "qwen3": lambda: tf.Qwen3Config(**common, tie_word_embeddings=True, head_dim=64),
        "gemma3": lambda: tf.Gemma3TextConfig(**common, tie_word_embeddings=True, head_dim=64,
                                              query_pre_attn_scalar=64, sliding_window=8,
                                              layer_types=["sliding_attention", "full_attention"] * 2),
    }
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs[arch](), dtype=torch.float32)
    with torch.no_grad():  # sharper than init so quantization error shows in the logits
        for p in model.parameters():
            p.mul_(4.0) if p.ndim == 2 else p.add_(torch.randn_like(p) * 0.1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
