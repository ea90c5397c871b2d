"""GGUF file -> Hugging Face model directory (safetensors, config, tokenizer).

Each tensor is dequantized with `gguf.quants.dequantize` (F32/F16/BF16, Q4_0..Q8_0,
K-quants, I-quants), renamed and fixed up (see `models.gguf_families`), and streamed to disk one
at a time, so peak memory is one tensor rather than the whole model.

Precision: float32 by default. A dequantized value is `scale * integer` with an fp16
scale, which bfloat16 cannot hold exactly, so float32 is the only lossless choice and
matches transformers' own GGUF loader bit for bit. It costs 4 bytes per parameter (about
1.1 GB for Gemma 3 270M); `dtype="bfloat16"` halves that at a small rounding cost.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import CorruptModelFile, ModelNotFound, TunelabError
from tunelab.models.gguf_families import BY_ARCH, IGNORED, GGUFFamily
from tunelab.store.gguf_config import build_config
from tunelab.store.staging import write_text
from tunelab.store.weights import TensorSpec, write_safetensors

DTYPES = {"float32": "F32", "bfloat16": "BF16"}
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.merges", "tokenizer.ggml.precompiled_charsmap")


def open_gguf(path: Path):
    """A `gguf.GGUFReader` for `path`; a missing, corrupt or truncated file is a one-line error."""
    from gguf import GGUFReader

    if not path.is_file():
        raise ModelNotFound(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises whatever numpy/struct hit first
        raise CorruptModelFile(f"{path}: not a valid GGUF file ({_reason(err)})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise CorruptModelFile(f"{path}: truncated GGUF file (tensor '{t.name}' runs past the end)")
    return reader


def read_metadata(reader) -> dict[str, Any]:
    """GGUF key -> value, skipping the tokenizer's vocabulary-sized arrays."""
    return {k: f.contents() for k, f in reader.fields.items() if k not in _BIG_ARRAYS}


def import_gguf(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> None:
    """Write a Hugging Face model directory for `gguf_path` into the existing `out_dir`,
    showing each phase (read, dequantize per tensor, tokenizer) as a `tunelab.progress` step.

    dtype "gguf" writes no weights: the directory points at the file (`models.gguf_weights`),
    whose quantized tensors the engine then runs as they are."""
    from tunelab.progress import progress

    if dtype == "gguf":
        return _import_pointer(Path(gguf_path), out_dir)
    if dtype not in DTYPES:
        raise TunelabError(f"dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    gguf_path = Path(gguf_path)
    with progress(f"reading {gguf_path.name}"):
        reader = open_gguf(gguf_path)
        meta = read_metadata(reader)
        family = _family(gguf_path, meta)
        shapes = {t.name: _numpy_shape(t) for t in reader.tensors}
        config = build_config(family, meta, shapes, dtype)
        specs = _tensor_specs(gguf_path, reader, family, config, DTYPES[dtype])
        _check_complete(gguf_path, config, {s.name for s in specs})
    with progress(f"dequantizing to {dtype}", total=len(specs), unit="tensor") as task:
        write_safetensors(out_dir, [_counted(spec, task) for spec in specs])
    with progress("converting the tokenizer (once)"):
        stop_ids = _tokenizer(gguf_path, out_dir, family.arch, meta, config.model_type)
    config.save_pretrained(str(out_dir))
    write_text(out_dir / "generation_config.json", json.dumps(_generation_config(config, stop_ids), indent=2))


def _import_pointer(gguf_path: Path, out_dir: Path) -> None:
    """Config, tokenizer and generation config of `gguf_path`, and a pointer to its tensors."""
    from tunelab.models.gguf_weights import GGUF_POINTER, pointer_text
    from tunelab.progress import progress

    with progress(f"reading {gguf_path.name}"):
        reader = open_gguf(gguf_path)
        meta = read_metadata(reader)
        family = _family(gguf_path, meta)
        config = build_config(family, meta, {t.name: _numpy_shape(t) for t in reader.tensors}, "bfloat16")
    with progress("converting the tokenizer (once)"):
        stop_ids = _tokenizer(gguf_path, out_dir, family.arch, meta, config.model_type)
    config.save_pretrained(str(out_dir))
    write_text(out_dir / "generation_config.json", json.dumps(_generation_config(config, stop_ids), indent=2))
    write_text(out_dir / GGUF_POINTER, pointer_text(gguf_path, reader))


def _counted(spec: TensorSpec, task) -> TensorSpec:
    """`spec`, advancing `task` once its bytes are produced."""

    def produce() -> memoryview:
        data = spec.produce()
        task.advance()
        return data

    return TensorSpec(spec.name, spec.dtype, spec.shape, produce)


def _family(path: Path, meta: dict) -> GGUFFamily:
    arch = meta.get("general.architecture")
    if arch not in BY_ARCH:
        raise TunelabError(
            f"{path}: architecture '{arch}' is not supported for import (supported: {', '.join(BY_ARCH)})"
        )
    return BY_ARCH[arch]


def _numpy_shape(tensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dim first


def _tensor_specs(path: Path, reader, family: GGUFFamily, config, st_dtype: str) -> list[TensorSpec]:
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    specs = []
    for t in reader.tensors:
        if t.name in IGNORED:
            continue
        name = family.hf_name(t.name)
        if name is None:
            raise CorruptModelFile(f"{path}: tensor '{t.name}' has no Hugging Face counterpart in {family.arch}")
        produce = partial(_tensor_bytes, path, t, family, heads, kv, st_dtype)
        specs.append(TensorSpec(name, st_dtype, _numpy_shape(t), produce))
    return sorted(specs, key=lambda s: s.name)


def _tensor_bytes(path: Path, tensor, family: GGUFFamily, heads: int, kv: int, st_dtype: str) -> memoryview:
    from gguf.quants import dequantize

    try:
        w = dequantize(tensor.data, tensor.tensor_type).reshape(_numpy_shape(tensor))
    except Exception as err:
        raise CorruptModelFile(f"{path}: cannot read tensor '{tensor.name}' ({_reason(err)})") from None
    w = family.from_gguf(tensor.name, w.astype(np.float32, copy=False), heads, kv)
    if st_dtype == "F32":
        return memoryview(np.ascontiguousarray(w, dtype=np.float32)).cast("B")
    import torch

    return memoryview(torch.from_numpy(np.require(w, requirements=["C", "W"])).to(torch.bfloat16).view(torch.int16).numpy()).cast("B")


def _check_complete(path: Path, config, names: set[str]) -> None:
    """Every parameter the HF model expects must come from the file, and nothing else."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    if missing := sorted(expected - names):
        raise CorruptModelFile(f"{path}: missing tensors for {config.model_type}: {', '.join(missing[:5])}")
    if extra := sorted(names - expected):
        raise CorruptModelFile(f"{path}: unexpected tensors for {config.model_type}: {', '.join(extra[:5])}")


def _tokenizer(path: Path, out_dir: Path, arch: str, meta: dict[str, Any], model_type: str) -> list[int]:
    from tunelab.store.gguf_tokenizer import convert_tokenizer

    try:
        return convert_tokenizer(path, out_dir, arch, meta, model_type)
    except (KeyError, ValueError, TypeError) as err:
        raise CorruptModelFile(f"{path}: cannot build a tokenizer from its metadata ({_reason(err)})") from None


def _generation_config(config, stop_ids: list[int]) -> dict[str, Any]:
    eos: Any = stop_ids if len(stop_ids) > 1 else (stop_ids[0] if stop_ids else config.eos_token_id)
    return {"bos_token_id": config.bos_token_id, "eos_token_id": eos,
            "pad_token_id": config.pad_token_id, "transformers_version": _tf_version()}


def _tf_version() -> str:
    import transformers

    return transformers.__version__


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:200] if text else type(err).__name__
