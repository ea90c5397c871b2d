"""Which ggml type each tensor gets: llama.cpp's quantization mixtures, without imatrix.

A K-quant file is a mixture (`llama_tensor_get_type` in llama.cpp's llama-quant.cpp):
- the output head, or the token embedding when it doubles as the head (tied), gets Q6_K
  in every quantized mixture, Q4_0 too (Q8_0 when its rows are not a multiple of 256);
- Q4_K_M and Q5_K_M give Q6_K to attn_v and ffn_down in the first and last eighth of
  the layers and every third layer between (`use_more_bits`); Q4_K_S gives Q5_K to the
  first four attn_v and the first eighth of ffn_down;
- a tensor whose rows do not fit 256-value blocks falls back to a 32-value type
  (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), and to F16 when 32 does not fit either.
Vectors (norms, biases, rope factors) always stay F32.
"""

from __future__ import annotations

import dataclasses
import re

_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_BLOCK = {"F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q5_0": 32, "Q5_1": 32,
          "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class Mixture:
    """One --quant choice: the default matrix type and llama.cpp's bump rules for it."""

    name: str
    base: str  # gguf.GGMLQuantizationType member name for ordinary matrices
    file_type: int  # llama_ftype written to general.file_type
    more_bits: str | None = None  # "m" (Q4_K_M/Q5_K_M rules) or "s" (Q4_K_S rules)


@dataclasses.dataclass(frozen=True)
class Model:
    """What the rules need to know about the whole model."""

    n_layer: int
    n_attn_v: int
    tied: bool  # no output.weight: token_embd is also the output head
    llama_70b: bool = False  # llama.cpp bumps a 70B's attn_v from Q4_K to Q5_K


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's pick of layers that matter most: first and last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(mix: Mixture, model: Model, name: str, shape: tuple[int, ...]) -> str:
    """The ggml type name for tensor `name` of numpy `shape` (rows, cols) under `mix`."""
    if len(shape) < 2 or not name.endswith("weight") or name.endswith("_norm.weight"):
        return "F32"
    cols = shape[-1]
    if mix.base in ("F16", "BF16"):
        return mix.base
    if name == "output.weight" or (model.tied and name == "token_embd.weight"):
        return "Q8_0" if cols % 256 else _fit("Q6_K" if mix.base != "Q8_0" else "Q8_0", cols)
    return _fit(_bumped(mix, model, name), cols)


def _bumped(mix: Mixture, model: Model, name: str) -> str:
    """The base type, raised for the attn_v / ffn_down layers the mixture protects."""
    match = _LAYER.match(name)
    layer = int(match.group(1)) if match else 0
    if "attn_v.weight" in name:
        kind = _attn_v(mix, model, layer)
        return "Q5_K" if model.llama_70b and kind == "Q4_K" else kind
    if "ffn_down" in name:
        if mix.more_bits == "m" and use_more_bits(layer, model.n_layer):
            return "Q6_K"
        if mix.more_bits == "s" and layer < model.n_layer // 8:
            return "Q5_K"
    return mix.base


def _attn_v(mix: Mixture, model: Model, layer: int) -> str:
    if mix.more_bits == "m" and use_more_bits(layer, model.n_attn_v):
        return "Q6_K"
    if mix.more_bits == "s" and layer < 4:
        return "Q5_K"
    return mix.base


def _fit(qtype: str, cols: int) -> str:
    """`qtype`, or llama.cpp's fallback when rows are not a multiple of its block."""
    if cols % _BLOCK[qtype] == 0:
        return qtype
    fallback = _FALLBACK.get(qtype, "F16")
    return fallback if cols % _BLOCK[fallback] == 0 else "F16"


def model_facts(names: list[str], n_layer: int, arch: str, gqa: bool = False) -> Model:
    """The Model facts for a file holding tensors `names` (gguf names).

    llama.cpp calls an 80-layer llama with grouped KV heads (`gqa`) a 70B.
    """
    return Model(n_layer=n_layer, n_attn_v=sum("attn_v.weight" in n for n in names),
                 tied="output.weight" not in names, llama_70b=arch == "llama" and n_layer == 80 and gqa)
