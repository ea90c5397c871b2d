"""GGUF quant types (`--quant`): every one is written in Python, no llama.cpp build needed.

f16, bf16, q8_0, q4_0 (and the Q5_0/Q5_1 fallbacks) come from `gguf.quants.quantize`;
Q4_K, Q5_K and Q6_K from our numpy port of ggml's reference quantizers (`gguf.kquants`).
Which tensor gets which type follows llama.cpp's mixtures (`gguf.mixture`).
"""

from __future__ import annotations

import numpy as np

from tunelab.export.errors import ExportError
from tunelab.export.gguf.kquants import QUANTIZERS, quantize_k
from tunelab.export.gguf.mixture import Mixture

QUANTS: dict[str, Mixture] = {q.name: q for q in (
    Mixture("f16", "F16", 1),
    Mixture("bf16", "BF16", 32),
    Mixture("q8_0", "Q8_0", 7),
    Mixture("q4_0", "Q4_0", 2),
    Mixture("q4_k_s", "Q4_K", 14, more_bits="s"),
    Mixture("q4_k_m", "Q4_K", 15, more_bits="m"),
    Mixture("q5_k_m", "Q5_K", 17, more_bits="m"),
    Mixture("q6_k", "Q6_K", 18),
)}


def parse_quant(name: str) -> Mixture:
    """The Mixture for `name` (case-insensitive); an unknown name lists the valid ones."""
    quant = QUANTS.get(name.lower().replace("-", "_"))
    if quant is None:
        raise ExportError(f"--quant: unknown quant type '{name}'; valid: {', '.join(QUANTS)}")
    return quant


def encode(data: np.ndarray, qtype: str) -> np.ndarray:
    """float32 array -> the array GGUFWriter stores for ggml type `qtype` (a type name)."""
    import gguf

    if qtype == "F32":
        return data.astype(np.float32)
    if qtype == "F16":
        return data.astype(np.float16)
    if qtype in QUANTIZERS:
        return quantize_k(data, qtype)
    return gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType[qtype])
