"""`ModelSpec`: the handful of numbers and switches our decoder needs, read from a HF config.

Families differ in a few flags (q/k norm, biases, Gemma's norm offset and extra norms,
sliding windows). Reading them once into a flat, typed spec keeps the model code free of
`getattr(config, ...)` chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelSpec:
    """Shape and behaviour of one decoder-only model."""

    family: str  # "llama" | "qwen" | "gemma3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_positions: int
    act: str = "silu"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3 and Gemma 3 normalise q and k per head before rope
    norm_offset: float = 0.0  # 1.0 for Gemma's (1 + w) RMSNorm
    attn_scale: float = 0.0  # softmax scale; 0 means head_dim ** -0.5
    embed_scale: float | None = None  # Gemma multiplies embeddings by sqrt(hidden)
    final_softcap: float | None = None
    attn_softcap: float | None = None
    tie_embeddings: bool = False
    layer_types: list[str] = field(default_factory=list)  # per layer: full_attention | sliding_attention
    windows: list[int | None] = field(default_factory=list)  # per layer sliding window or None

    @property
    def scale(self) -> float:
        return self.attn_scale or self.head_dim**-0.5


def base_spec(config, family: str, **overrides) -> ModelSpec:
    """Fields common to all families, from a transformers config; `overrides` set the rest."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    n = config.num_hidden_layers
    layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * n)
    window = getattr(config, "sliding_window", None)
    spec = ModelSpec(
        family=family,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_layers=n,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
        rms_norm_eps=config.rms_norm_eps,
        max_positions=config.max_position_embeddings,
        act=getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", "silu"),
        tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        layer_types=layer_types,
        windows=[window if t == "sliding_attention" else None for t in layer_types],
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec
