"""A model's shape as the planner needs it, read from a Hugging Face config.json dict.

No torch: parameter counts come from the config alone, so a 70B model can be planned on a
laptop. A small built-in table gives the shapes of common architectures by a bare name
(`llama3-8b`, `qwen2.5-7b`, `gemma3-270m`), for planning with no download at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tunelab.errors import ConfigError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The sizes that set a decoder-only transformer's memory."""

    family: str  # "llama" (llama, qwen2, mistral, ...) or "gemma3": they save different activations
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool  # output layer shares the embedding matrix
    qkv_bias: bool
    max_positions: int
    sliding_window: int | None  # gemma3: most layers attend to this many tokens only
    full_layers: int  # layers with full (not sliding) attention
    dtype: str  # the checkpoint's dtype (float32, bfloat16, float16)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer, by its module name."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_params(self) -> int:
        """Parameters of one decoder layer: linears, biases and norms."""
        linear = sum(a * b for a, b in self.linear_shapes().values())
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        norms = 4 * self.hidden + 2 * self.head_dim if self.family == "gemma3" else 2 * self.hidden
        return linear + bias + norms

    def embedding_params(self) -> int:
        """The input embedding plus, when untied, the output layer."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def total_params(self) -> int:
        """Every parameter, tied weights counted once."""
        return self.embedding_params() + self.layers * self.layer_params() + self.hidden


def shape_from_config(conf: dict[str, Any], where: str = "config.json") -> ModelShape:
    """A ModelShape from a config.json dict (a multimodal config's text_config is used)."""
    if "hidden_size" not in conf and isinstance(conf.get("text_config"), dict):
        conf = conf["text_config"]
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if not conf.get(k)]
    if missing:
        raise ConfigError(f"{where}: cannot plan memory without {', '.join(missing)}")
    model_type = str(conf.get("model_type", "llama"))
    heads = int(conf["num_attention_heads"])
    layers = int(conf["num_hidden_layers"])
    kinds = conf.get("layer_types") or []
    window = conf.get("sliding_window") if model_type.startswith("gemma3") else None
    return ModelShape(
        family="gemma3" if model_type.startswith("gemma3") else "llama",
        vocab=int(conf["vocab_size"]), hidden=int(conf["hidden_size"]),
        intermediate=int(conf["intermediate_size"]), layers=layers, heads=heads,
        kv_heads=int(conf.get("num_key_value_heads") or heads),
        head_dim=int(conf.get("head_dim") or conf["hidden_size"] // heads),
        tied=bool(conf.get("tie_word_embeddings", model_type.startswith("gemma"))),
        qkv_bias=model_type.startswith("qwen2") or bool(conf.get("attention_bias")),
        max_positions=int(conf.get("max_position_embeddings") or 4096),
        sliding_window=int(window) if window else None,
        full_layers=sum(1 for k in kinds if k == "full_attention") if kinds and window else layers,
        dtype=str(conf.get("torch_dtype") or conf.get("dtype") or "float32"),
    )


def _llama(vocab, hidden, inter, layers, heads, kv, head_dim, tied, max_pos, model_type="llama"):
    return dict(model_type=model_type, vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                head_dim=head_dim, tie_word_embeddings=tied, max_position_embeddings=max_pos,
                torch_dtype="bfloat16")


def _gemma3(hidden, inter, layers, heads, kv):
    kinds = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
    return dict(_llama(262144, hidden, inter, layers, heads, kv, 256, True, 32768, "gemma3_text"),
                sliding_window=512, layer_types=kinds)


# Bare architecture name -> config.json fields (from the models' published configs).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama3-8b": _llama(128256, 4096, 14336, 32, 32, 8, 128, False, 8192),
    "llama3-70b": _llama(128256, 8192, 28672, 80, 64, 8, 128, False, 8192),
    "llama3.2-1b": _llama(128256, 2048, 8192, 16, 32, 8, 64, True, 131072),
    "llama3.2-3b": _llama(128256, 3072, 8192, 28, 24, 8, 128, True, 131072),
    "mistral-7b": _llama(32768, 4096, 14336, 32, 32, 8, 128, False, 32768, "mistral"),
    "qwen2.5-0.5b": _llama(151936, 896, 4864, 24, 14, 2, 64, True, 32768, "qwen2"),
    "qwen2.5-1.5b": _llama(151936, 1536, 8960, 28, 12, 2, 128, True, 32768, "qwen2"),
    "qwen2.5-7b": _llama(152064, 3584, 18944, 28, 28, 4, 128, False, 32768, "qwen2"),
    "gemma3-270m": _gemma3(640, 2048, 18, 4, 1),
    "gemma3-1b": _gemma3(1152, 6912, 26, 4, 1),
}
