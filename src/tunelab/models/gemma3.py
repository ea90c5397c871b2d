"""Gemma 3 (text): Llama's attention with q/k norm, plus norms after attention and MLP.

    h = x + post_attn_norm(attn(input_norm(x)))
    y = h + post_ffw_norm(mlp(pre_ffw_norm(h)))

Every RMSNorm scales by (1 + w). Embeddings are multiplied by sqrt(hidden). Layers alternate
sliding-window (local rope base) and global attention (global rope base); the softmax scale is
query_pre_attn_scalar ** -0.5 rather than head_dim ** -0.5.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.models.attention import AttnBatch
from tunelab.models.layers import GatedMLP, RMSNorm, add_norm
from tunelab.models.llama import Attention, CausalLM, Rope
from tunelab.models.spec import ModelSpec, base_spec


class Gemma3Layer(nn.Module):
    """Sandwich-norm block: each sublayer's output is normalised before the residual add."""

    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        dim, eps, off = spec.hidden_size, spec.rms_norm_eps, spec.norm_offset
        self.self_attn = Attention(spec, layer)
        self.mlp = GatedMLP(dim, spec.intermediate_size, spec.act, spec.mlp_bias)
        self.input_layernorm = RMSNorm(dim, eps, off)
        self.post_attention_layernorm = RMSNorm(dim, eps, off)
        self.pre_feedforward_layernorm = RMSNorm(dim, eps, off)
        self.post_feedforward_layernorm = RMSNorm(dim, eps, off)
        self.layer_type = spec.layer_types[layer]

    def forward(self, x, batch: AttnBatch, cache, rope: Rope) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), batch, cache, rope)
        x, h = add_norm(x, h, self.post_attention_layernorm, self.pre_feedforward_layernorm)
        return add_norm(x, self.mlp(h), self.post_feedforward_layernorm, None)[0]


class Gemma3ForCausalLM(CausalLM):
    """Gemma 3 text model; shares the paged forward of `CausalLM`."""

    layer_cls = Gemma3Layer


def gemma3_spec(config) -> ModelSpec:
    """Gemma 3 text config -> spec (sliding/global layer pattern comes from `layer_types`)."""
    return base_spec(
        config,
        "gemma3",
        qk_norm=True,
        norm_offset=1.0,
        attn_scale=config.query_pre_attn_scalar**-0.5,
        embed_scale=config.hidden_size**0.5,
        final_softcap=getattr(config, "final_logit_softcapping", None),
        attn_softcap=getattr(config, "attn_logit_softcapping", None),
        act=getattr(config, "hidden_activation", None) or "gelu_pytorch_tanh",
        tie_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
    )
