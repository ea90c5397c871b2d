"""GGUF family facts, one table for both directions: export writes them, import undoes them.

For each family llama.cpp runs (llama/mistral, qwen2, qwen3, gemma3) it says the
llama.cpp architecture, the transformers classes, the tensor names on both sides and
the two value changes llama.cpp's converter makes:
- llama/mistral: HF rotates query/key halves (NEOX style), llama.cpp's LLAMA graph
  rotates interleaved pairs, so q and k rows are permuted per head;
- gemma3: HF's RMSNorm multiplies by (1 + w), llama.cpp's by w, so every norm gets +1.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
# Gemma 3 has four norms per block; llama.cpp's `ffn_norm` is its pre-feed-forward norm.
_BLOCK_GEMMA3 = {**_BLOCK, "ffn_norm": "pre_feedforward_layernorm",
                 "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}

# Gemma 3 values llama.cpp hard-codes instead of storing: every 6th layer is global, and
# the sliding layers use rope base 10k. 27B (62 layers) scales queries by hidden/heads.
GEMMA3_SWA_PATTERN = 6
GEMMA3_LOCAL_ROPE_BASE = 10000.0
GEMMA3_27B_LAYERS = 62

# Tensors with no HF counterpart: llama 3.1's rope factors, which HF derives from config.
IGNORED = frozenset({"rope_freqs.weight"})

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_HF_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclasses.dataclass(frozen=True)
class GGUFFamily:
    """How one model family is stored in GGUF."""

    arch: str  # general.architecture, also the gguf.MODEL_ARCH member in upper case
    model_types: tuple[str, ...]  # HF config model_type values written as this arch
    hf_class: str  # transformers model class an import writes into config.json
    config_class: str  # transformers config class an import builds
    permute_qk: bool = False
    norm_shift: float = 0.0
    block: dict[str, str] = dataclasses.field(default_factory=lambda: dict(_BLOCK))

    def hf_name(self, gguf_name: str) -> str | None:
        """The HF parameter name for a GGUF tensor name, or None if it has no counterpart."""
        if m := _BLOCK_RE.match(gguf_name):
            layer, part, kind = m.groups()
            return f"model.layers.{layer}.{self.block[part]}.{kind}" if part in self.block else None
        stem, _, kind = gguf_name.rpartition(".")
        return f"{_GLOBAL[stem]}.{kind}" if stem in _GLOBAL and kind in ("weight", "bias") else None

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF tensor name for an HF parameter name, or None if llama.cpp has none."""
        if m := _HF_BLOCK_RE.match(hf_name):
            layer, part, kind = m.groups()
            gguf_part = {v: k for k, v in self.block.items()}.get(part)
            return f"blk.{layer}.{gguf_part}.{kind}" if gguf_part else None
        stem, _, kind = hf_name.rpartition(".")
        gguf_stem = {v: k for k, v in _GLOBAL.items()}.get(stem)
        return f"{gguf_stem}.{kind}" if gguf_stem else None

    def to_gguf(self, gguf_name: str, w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
        """HF values -> the values llama.cpp expects in tensor `gguf_name`."""
        if self.permute_qk and (heads := _qk_heads(gguf_name, n_head, n_head_kv)):
            return permute_rope(w, heads)
        if self.norm_shift and gguf_name.endswith("norm.weight"):
            return w + np.float32(self.norm_shift)
        return w

    def from_gguf(self, gguf_name: str, w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
        """Undo `to_gguf`: llama.cpp's values in `gguf_name` -> HF values."""
        if self.permute_qk and (heads := _qk_heads(gguf_name, n_head, n_head_kv)):
            return unpermute_rope(w, heads)
        if self.norm_shift and gguf_name.endswith("norm.weight"):
            return w - np.float32(self.norm_shift)
        return w


FAMILIES: tuple[GGUFFamily, ...] = (
    GGUFFamily("llama", ("llama", "mistral"), "LlamaForCausalLM", "LlamaConfig", permute_qk=True),
    GGUFFamily("qwen2", ("qwen2",), "Qwen2ForCausalLM", "Qwen2Config"),
    GGUFFamily("qwen3", ("qwen3",), "Qwen3ForCausalLM", "Qwen3Config"),
    GGUFFamily("gemma3", ("gemma3_text", "gemma3"), "Gemma3ForCausalLM", "Gemma3TextConfig",
               norm_shift=1.0, block=_BLOCK_GEMMA3),
)
BY_ARCH = {f.arch: f for f in FAMILIES}
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
# Export only: Qwen2.5-VL's language model is llama.cpp's `qwen2vl` (qwen2 tensors, M-RoPE), written
# beside an mmproj file (export/gguf/mmproj.py). Not in BY_ARCH: importing a qwen2vl GGUF would drop
# the vision tower, so import keeps refusing that architecture.
QWEN2VL = GGUFFamily("qwen2vl", ("qwen2_5_vl",), "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig")
# Qwen3-VL's is `qwen3vl`: qwen3 tensors, interleaved M-RoPE, and the DeepStack level count
QWEN3VL = GGUFFamily("qwen3vl", ("qwen3_vl",), "Qwen3VLForConditionalGeneration", "Qwen3VLConfig")
VLM_BY_MODEL_TYPE = {t: f for f in (QWEN2VL, QWEN3VL) for t in f.model_types}


def _qk_heads(gguf_name: str, n_head: int, n_head_kv: int) -> int | None:
    if ".attn_q." in gguf_name:
        return n_head
    if ".attn_k." in gguf_name:
        return n_head_kv
    return None


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """NEOX half-rotation rows -> interleaved pairs, per head: (n_head*hd, in) stays that shape."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of `permute_rope`: (H, D/2, 2, in) rows back to (H, 2, D/2, in)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
