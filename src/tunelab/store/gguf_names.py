"""llama.cpp tensor names -> Hugging Face names, and the value fix-ups llama.cpp applied.

llama.cpp's converter (convert_hf_to_gguf.py) renames tensors to `blk.N.attn_q.weight`
style and changes two kinds of values on the way, which import must undo:

- llama: q/k projection rows are permuted from HF's "rotate half" rope layout to
  GGML's interleaved one (`permute` in the converter). We apply the inverse.
- gemma (2 and 3): RMSNorm weights are stored as `1 + w`, because HF's Gemma norm
  computes `x * (1 + w)` while GGML's computes `x * w`. We subtract 1.
"""

from __future__ import annotations

import re

import numpy as np

SUPPORTED_ARCHS = ("llama", "qwen2", "gemma3")

_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Gemma 3 has four norms per block; llama.cpp's `ffn_norm` is its pre-feed-forward norm.
_BLOCK_GEMMA3 = {
    **_BLOCK,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

# Tensors with no HF counterpart. llama 3.1's `rope_freqs` holds rope scaling factors that
# HF derives from config instead; transformers' own GGUF loader drops it too.
IGNORED = {"rope_freqs.weight"}

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The HF parameter name for a GGUF tensor name, or None if it has no counterpart."""
    table = _BLOCK_GEMMA3 if arch == "gemma3" else _BLOCK
    if m := _BLOCK_RE.match(gguf_name):
        layer, part, kind = m.groups()
        return f"model.layers.{layer}.{table[part]}.{kind}" if part in table else None
    if m := _GLOBAL_RE.match(gguf_name):
        part, kind = m.groups()
        return f"{_GLOBAL[part]}.{kind}" if part in _GLOBAL else None
    return None


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rope row permutation of a q or k projection (weight or bias).

    llama.cpp grouped each head's rows as (2, head_dim/2) -> (head_dim/2, 2); we swap back.
    """
    rows = w.shape[0]
    grouped = w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])  # (H, D/2, 2, in)
    return grouped.swapaxes(1, 2).reshape(w.shape)  # (H, 2, D/2, in) -> (H*D, in)


def fix_values(arch: str, gguf_name: str, w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """Undo the value changes llama.cpp made to tensor `gguf_name` (see module doc)."""
    if arch == "llama" and ".attn_q." in gguf_name:
        return unpermute_qk(w, n_head)
    if arch == "llama" and ".attn_k." in gguf_name:
        return unpermute_qk(w, n_head_kv)
    if arch == "gemma3" and gguf_name.endswith("norm.weight"):
        return w - np.float32(1.0)
    return w
