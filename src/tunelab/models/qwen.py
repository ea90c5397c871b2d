"""Qwen2/2.5 (biased q/k/v) and Qwen3 (per-head RMSNorm on q and k): Llama's decoder with flags."""

from __future__ import annotations

from tunelab.models.spec import ModelSpec, base_spec


def qwen2_spec(config) -> ModelSpec:
    """Qwen2 and 2.5: q/k/v projections carry a bias, o_proj does not."""
    return base_spec(config, "qwen", qkv_bias=True)


def qwen3_spec(config) -> ModelSpec:
    """Qwen3: no biases by default, q/k RMSNorm over each head before rope."""
    bias = bool(getattr(config, "attention_bias", False))
    return base_spec(config, "qwen", qkv_bias=bias, o_bias=bias, qk_norm=True)
