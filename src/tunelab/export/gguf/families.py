"""The `{arch}.*` hyper-parameter keys llama.cpp reads, per family.

Which families exist, their tensor names and weight fixes live in the one table of
GGUF family facts, `tunelab.models.gguf_families`, shared with GGUF import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tunelab.export.errors import UnsupportedArchitecture
from tunelab.models.gguf_families import BY_MODEL_TYPE, VLM_BY_MODEL_TYPE, GGUFFamily

Hparams = dict[str, Any]


def _gemma3_hparams(writer: Any, hp: Hparams) -> None:
    import gguf

    rope = hp.get("rope_parameters") or {}
    full = rope.get("full_attention", rope) if isinstance(rope, dict) else {}
    local = rope.get("sliding_attention", {}) if isinstance(rope, dict) else {}
    writer.add_rope_freq_base(float(full.get("rope_theta", hp.get("rope_theta", 1_000_000.0))))
    writer.add_rope_freq_base_swa(float(local.get("rope_theta", hp.get("rope_local_base_freq", 10_000.0))))
    if hp.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(hp["final_logit_softcapping"]))
    if hp.get("sliding_window"):
        writer.add_sliding_window(int(hp["sliding_window"]))
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types(hp)])
    scaling = full.get("rope_type") if isinstance(full, dict) else None
    factor = full.get("factor") if isinstance(full, dict) else None
    if scaling == "linear" and factor:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))


def layer_types(hp: Hparams) -> list[str]:
    """Per-layer attention kind; older gemma3 configs give only a period (every Nth is full)."""
    if hp.get("layer_types"):
        return list(hp["layer_types"])
    period = int(hp.get("sliding_window_pattern") or hp.get("_sliding_window_pattern") or 6)
    return ["full_attention" if (i + 1) % period == 0 else "sliding_attention"
            for i in range(int(hp["num_hidden_layers"]))]


def family_for(config: Hparams, where: str = "config.json") -> GGUFFamily:
    """The GGUFFamily for a config dict; UnsupportedArchitecture names the valid ones."""
    model_type = str(config.get("model_type", ""))
    if model_type in VLM_BY_MODEL_TYPE:
        return VLM_BY_MODEL_TYPE[model_type]
    if model_type not in BY_MODEL_TYPE:
        raise UnsupportedArchitecture(
            f"{where}: GGUF export does not support model_type '{model_type}'; "
            f"supported: {', '.join(sorted(BY_MODEL_TYPE))}")
    return BY_MODEL_TYPE[model_type]


def text_config(config: Hparams) -> Hparams:
    """Multimodal wrappers (gemma3) keep the language model under text_config; Qwen2.5-VL keeps it
    there (transformers 5) or at the top level (4.x), beside tie_word_embeddings."""
    if config.get("model_type") == "gemma3" and isinstance(config.get("text_config"), dict):
        return {**config["text_config"], "model_type": "gemma3_text"}
    if config.get("model_type") in VLM_BY_MODEL_TYPE:
        return {**config, **(config.get("text_config") or {}), "model_type": config["model_type"]}
    return config


def head_dim(hp: Hparams) -> int:
    return int(hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"])


def write_hparams(writer: Any, family: GGUFFamily, hp: Hparams) -> None:
    """The `{arch}.*` keys llama.cpp reads for this family."""
    n_kv = int(hp.get("num_key_value_heads") or hp["num_attention_heads"])
    writer.add_context_length(int(hp.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(hp["hidden_size"]))
    writer.add_block_count(int(hp["num_hidden_layers"]))
    writer.add_feed_forward_length(int(hp["intermediate_size"]))
    writer.add_head_count(int(hp["num_attention_heads"]))
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(head_dim(hp))
    writer.add_value_length(head_dim(hp))
    if family.arch == "gemma3":
        _gemma3_hparams(writer, hp)
        return
    writer.add_rope_dimension_count(head_dim(hp))
    writer.add_rope_freq_base(float(rope_params(hp).get("rope_theta", 10_000.0)))
    if family.arch in ("qwen2vl", "qwen3vl"):  # M-RoPE: rotary pairs per position axis (time, height, width, -)
        sections = [int(n) for n in rope_params(hp)["mrope_section"]]
        writer.add_rope_dimension_sections(sections + [0] * (4 - len(sections)))
        if family.arch == "qwen3vl":  # image rows carry this many DeepStack feature sets after the merged one
            writer.add_num_deepstack_layers(len((hp.get("vision_config") or {}).get("deepstack_visual_indexes") or []))
        return
    _rope_scaling(writer, rope_params(hp))


def rope_params(hp: Hparams) -> dict:
    """transformers 5 keeps rope settings in rope_parameters; 4.x in rope_theta/rope_scaling."""
    params = dict(hp.get("rope_scaling") or {})
    params.update(hp.get("rope_parameters") or {})
    params.setdefault("rope_theta", hp.get("rope_theta", 10_000.0))
    return params


def _rope_scaling(writer: Any, rope: dict) -> None:
    import gguf

    kind = rope.get("rope_type") or rope.get("type")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


def llama3_rope_factors(hp: Hparams) -> np.ndarray | None:
    """Llama 3.1+ scales low rope frequencies; llama.cpp reads the factors as rope_freqs."""
    rope = rope_params(hp)
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    dim, base = head_dim(hp), float(rope["rope_theta"])
    factor, old_ctx = float(rope["factor"]), float(rope.get("original_max_position_embeddings", 8192))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)
