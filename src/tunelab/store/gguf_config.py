"""A Hugging Face config from GGUF metadata, for the families in `models.gguf_families`.

Shapes come from the tensors themselves where the metadata can disagree or be absent
(vocab size, head dim). Values llama.cpp hard-codes instead of storing (Gemma 3's
sliding-window layer pattern and local rope base) are filled in the same way here.
"""

from __future__ import annotations

from typing import Any

from tunelab.models.gguf_families import (GEMMA3_27B_LAYERS, GEMMA3_LOCAL_ROPE_BASE, GEMMA3_SWA_PATTERN,
                                          GGUFFamily)


def config_kwargs(arch: str, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Keyword arguments for the transformers config class of `arch`.

    `meta` maps GGUF keys to values; `shapes` maps GGUF tensor names to numpy-order shapes.
    """
    p = arch + "."
    heads = int(meta[p + "attention.head_count"])
    kwargs: dict[str, Any] = dict(
        vocab_size=shapes["token_embd.weight"][0],
        hidden_size=int(meta[p + "embedding_length"]),
        intermediate_size=_first(meta[p + "feed_forward_length"]),
        num_hidden_layers=int(meta[p + "block_count"]),
        num_attention_heads=heads,
        num_key_value_heads=_first(meta.get(p + "attention.head_count_kv", heads)),
        max_position_embeddings=int(meta.get(p + "context_length", 2048)),
        rms_norm_eps=float(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-6)),
        tie_word_embeddings="output.weight" not in shapes,
        **_token_ids(meta),
    )
    head_dim = shapes["blk.0.attn_q.weight"][0] // heads
    rope = _rope(meta, p)
    if arch in ("llama", "qwen3"):
        kwargs.update(head_dim=head_dim, rope_parameters=rope,
                      attention_bias="blk.0.attn_q.bias" in shapes)
    elif arch == "qwen2":
        kwargs.update(rope_parameters=rope)
    elif arch == "gemma3":
        kwargs.update(_gemma3(meta, p, kwargs, head_dim, rope))
    return kwargs


def _gemma3(meta: dict, p: str, base: dict, head_dim: int, rope: dict) -> dict[str, Any]:
    layers = base["num_hidden_layers"]
    scalar = base["hidden_size"] // base["num_attention_heads"] if layers == GEMMA3_27B_LAYERS else head_dim
    local = {"rope_type": "default", "rope_theta": float(meta.get(p + "rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE))}
    return dict(
        head_dim=head_dim,
        query_pre_attn_scalar=scalar,
        sliding_window=int(meta.get(p + "attention.sliding_window", 4096)),
        layer_types=_gemma3_layer_types(meta.get(p + "attention.sliding_window_pattern"), layers),
        rope_parameters={"full_attention": rope, "sliding_attention": local},
        final_logit_softcapping=meta.get(p + "final_logit_softcapping"),
        attn_logit_softcapping=meta.get(p + "attn_logit_softcapping"),
    )


def _gemma3_layer_types(pattern: Any, layers: int) -> list[str]:
    """The file's per-layer sliding flags when it has them, else llama.cpp's every-6th-is-global."""
    if isinstance(pattern, (list, tuple)) and len(pattern) == layers:
        return ["sliding_attention" if sliding else "full_attention" for sliding in pattern]
    return ["full_attention" if (i + 1) % GEMMA3_SWA_PATTERN == 0 else "sliding_attention" for i in range(layers)]


def _rope(meta: dict, p: str) -> dict[str, Any]:
    theta = float(meta.get(p + "rope.freq_base", 10000.0))
    if meta.get(p + "rope.scaling.type") == "linear":
        return {"rope_type": "linear", "rope_theta": theta, "factor": float(meta[p + "rope.scaling.factor"])}
    return {"rope_type": "default", "rope_theta": theta}


def _token_ids(meta: dict) -> dict[str, int | None]:
    def get(key: str) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        return int(value) if value is not None else None

    return dict(bos_token_id=get("bos"), eos_token_id=get("eos"), pad_token_id=get("padding"))


def _first(value: Any) -> int:
    """Some GGUFs store a per-layer list; these architectures use one value for all layers."""
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


def build_config(family: GGUFFamily, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], dtype: str):
    """A transformers config object for the model in a GGUF file of `family`."""
    import transformers

    config = getattr(transformers, family.config_class)(**config_kwargs(family.arch, meta, shapes))
    config.architectures = [family.hf_class]
    config.dtype = dtype
    return config
