"""GGUF quant types: which we write in Python, and which need llama.cpp's quantizer.

f16, bf16, q8_0 and q4_0 come from `gguf.quants.quantize` (numpy). K-quants
(q4_k_m, q5_k_m, q6_k) need importance-aware mixing that only llama.cpp implements,
so they go through `llama_model_quantize` from llama-cpp-python when it is installed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tunelab.errors import MissingExtra
from tunelab.export.errors import ExportError


@dataclasses.dataclass(frozen=True)
class Quant:
    """One --quant choice."""

    name: str
    ggml_type: str  # gguf.GGMLQuantizationType member used for 2-D weights
    file_type: int  # llama_ftype written to general.file_type
    llama_cpp: bool = False  # needs llama.cpp's quantizer (K-quants)


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("f16", "F16", 1),
    Quant("bf16", "BF16", 32),
    Quant("q8_0", "Q8_0", 7),
    Quant("q4_0", "Q4_0", 2),
    Quant("q4_k_m", "F16", 15, llama_cpp=True),
    Quant("q5_k_m", "F16", 17, llama_cpp=True),
    Quant("q6_k", "F16", 18, llama_cpp=True),
)}


def parse_quant(name: str) -> Quant:
    """The Quant for `name` (case-insensitive); an unknown name lists the valid ones."""
    quant = QUANTS.get(name.lower().replace("-", "_"))
    if quant is None:
        raise ExportError(f"--quant: unknown quant type '{name}'; valid: {', '.join(QUANTS)}")
    if quant.llama_cpp:
        require_llama_cpp(quant.name)
    return quant


def require_llama_cpp(purpose: str) -> None:
    """Fail early, with the install command, when llama-cpp-python is missing."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise MissingExtra("llama-cpp-python", "llamacpp", f"--quant {purpose} (a K-quant)") from None


def tensor_type(quant: Quant, shape: tuple[int, ...]):
    """The ggml type for one tensor: norms and biases stay F32, rows that do not fit blocks F16."""
    import gguf

    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    qtype = gguf.GGMLQuantizationType[quant.ggml_type]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block != 0:
        return gguf.GGMLQuantizationType.F16
    return qtype


def encode(data: np.ndarray, qtype) -> np.ndarray:
    """float32 array -> the array GGUFWriter stores for `qtype`."""
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32), qtype)


def llama_cpp_quantize(src: Path, dst: Path, quant: Quant, threads: int = 0) -> None:
    """Requantize GGUF `src` into `dst` with llama.cpp (K-quants)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = quant.file_type
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if code != 0:
        raise ExportError(f"llama.cpp failed to quantize {src} to {quant.name} (code {code})")
