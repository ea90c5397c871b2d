"""Llama (2, 3.x) and Mistral: the plain pre-norm decoder the other families build on.

    x -> embed -> [ x + attn(norm(x)) ; x + mlp(norm(x)) ] * L -> norm -> lm_head

Module names mirror the Hugging Face checkpoints (model.layers.N.self_attn..., lm_head), so
the loader only needs a table for the fused projections.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.models.attention import AttnBatch, paged_attention
from tunelab.models.layers import (FusedLinear, GatedMLP, Linear, RMSNorm, Rotary, add_norm, apply_rotary,
                                   head_norm_rotary, rope_inv_freq)
from tunelab.models.spec import ModelSpec, base_spec

KVCaches = list[tuple[torch.Tensor, torch.Tensor]]
Rope = tuple[torch.Tensor, torch.Tensor]  # cos, signed sin (T, 1, D) from Rotary.at


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads, optional per-head q/k norm, over paged KV."""

    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        h, kv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.shape = (h, kv, d)
        parts = {"q_proj": h * d, "k_proj": kv * d, "v_proj": kv * d}
        self.qkv_proj = FusedLinear(spec.hidden_size, parts, bias=spec.qkv_bias)
        self.o_proj = Linear(h * d, spec.hidden_size, bias=spec.o_bias)
        if spec.qk_norm:
            self.q_norm = RMSNorm(d, spec.rms_norm_eps, spec.norm_offset)
            self.k_norm = RMSNorm(d, spec.rms_norm_eps, spec.norm_offset)
        self.qk_norm = spec.qk_norm
        self._qk_gain: tuple | None = None  # (norm weight keys, (h + kv, D) gain)
        self.window = spec.windows[layer]
        self.scale = spec.scale
        self.softcap = spec.attn_softcap

    def forward(self, x: torch.Tensor, batch: AttnBatch, cache, rope: Rope) -> torch.Tensor:
        """x: (T, hidden) -> (T, hidden)."""
        h, kv, d = self.shape
        qkv = self.qkv_proj(x)  # (T, (h + 2 kv) * d)
        qk = qkv[:, :(h + kv) * d].view(-1, h + kv, d)  # q and k heads side by side: normed and rotated at once
        v = qkv[:, (h + kv) * d:].view(-1, kv, d)  # (T, kv, D)
        if self.qk_norm:
            qk = head_norm_rotary(qk, self.qk_gain(), self.q_norm.eps, self.q_norm.offset, rope)
        else:
            qk = apply_rotary(qk, rope)
        q, k = qk[:, :h], qk[:, h:]  # (T, h, D), (T, kv, D)
        o = paged_attention(q, k, v, cache, batch, self.scale, self.window, self.softcap, self.quantized())
        return self.o_proj(o.reshape(-1, h * d))

    def quantized(self) -> bool:
        """Whether this layer's weights are quantized (under a LoRA wrapper too): its answers are
        inexact anyway, so decode takes the faster attention that rounds unlike SDPA."""
        o = self.o_proj
        return getattr(getattr(o, "base", o), "qweight", None) is not None

    def qk_gain(self) -> torch.Tensor:
        """(h + kv, D): q_norm's gain on every query head, k_norm's on every key head.

        Cached like `RMSNorm.gain`, keyed on both norm weights."""
        h, kv, d = self.shape
        key = (self.q_norm.weight_key(), self.k_norm.weight_key())
        if None in key:
            return torch.cat((self.q_norm.gain().expand(h, d), self.k_norm.gain().expand(kv, d)))
        if self._qk_gain is None or self._qk_gain[0] != key:
            with torch.inference_mode(False):
                gain = torch.cat((self.q_norm.gain().expand(h, d), self.k_norm.gain().expand(kv, d)))
            self._qk_gain = (key, gain.detach())
        return self._qk_gain[1]

    def _apply(self, fn, recurse: bool = True):
        self._qk_gain = None
        return super()._apply(fn, recurse)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.self_attn = Attention(spec, layer)
        self.mlp = GatedMLP(spec.hidden_size, spec.intermediate_size, spec.act, spec.mlp_bias)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.layer_type = spec.layer_types[layer]

    def forward(self, x, batch: AttnBatch, cache, rope: Rope) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), batch, cache, rope)
        x, h = add_norm(x, h, None, self.post_attention_layernorm)
        return x + self.mlp(h)


class Backbone(nn.Module):
    """Embedding, decoder layers and final norm (the checkpoint's `model.` prefix)."""

    def __init__(self, spec: ModelSpec, layer_cls: type[nn.Module]):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(layer_cls(spec, i) for i in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, spec.norm_offset)


class CausalLM(nn.Module):
    """A decoder-only LM over a paged KV cache; `forward` returns hidden states, not logits."""

    layer_cls: type[nn.Module] = DecoderLayer

    def __init__(self, spec: ModelSpec, config=None):
        super().__init__()
        self.spec = spec
        self.model = Backbone(spec, self.layer_cls)
        self.lm_head = Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Rotary tables stay fp32 plain tensors (not buffers) so casting the model keeps them exact.
        self.rotary = {t: Rotary(*_rope(config, spec, t)) for t in set(spec.layer_types)}

    def to_device(self, device: torch.device) -> "CausalLM":
        """Move weights and rotary tables to `device`."""
        self.to(device)
        for rot in self.rotary.values():
            rot.cos, rot.sin = rot.cos.to(device), rot.sin.to(device)
        return self

    def forward(self, input_ids: torch.Tensor, batch: AttnBatch, caches: KVCaches) -> torch.Tensor:
        """input_ids: (T,) flat tokens of all sequences -> hidden states (T, hidden)."""
        return self.decode(self.embed(input_ids), batch, caches)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (T,) -> token embeddings (T, hidden), scaled where the model says so (Gemma)."""
        x = self.model.embed_tokens(input_ids)  # (T, hidden)
        if self.spec.embed_scale is not None:
            x = x * torch.tensor(self.spec.embed_scale, dtype=x.dtype)
        return x

    def decode(self, x: torch.Tensor, batch: AttnBatch, caches: KVCaches) -> torch.Tensor:
        """Input rows (T, hidden) through the decoder layers and the final norm (VLMs bring image rows)."""
        ropes = {t: rot.at(batch.positions) for t, rot in self.rotary.items()}  # not once per layer
        for layer, cache in zip(self.model.layers, caches):
            x = layer(x, batch, cache, ropes[layer.layer_type])
        return self.model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, hidden) -> fp32 logits (N, vocab), soft-capped where the model says so."""
        logits = self.lm_head(hidden).float()
        if self.spec.final_softcap:
            cap = self.spec.final_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits


def _rope(config, spec: ModelSpec, layer_type: str) -> tuple[torch.Tensor, int, float]:
    inv_freq, scaling = rope_inv_freq(config, spec.head_dim, layer_type)
    return inv_freq, spec.max_positions, scaling


def llama_spec(config) -> ModelSpec:
    """Llama 2/3.x and Mistral (Mistral v0.1's sliding window applies to every layer)."""
    spec = base_spec(config, "llama")
    bias = bool(getattr(config, "attention_bias", False))
    spec.qkv_bias = spec.o_bias = bias
    spec.mlp_bias = bool(getattr(config, "mlp_bias", False))
    window = getattr(config, "sliding_window", None)
    if config.model_type == "mistral" and window:
        spec.windows = [window] * spec.num_layers
    return spec
