"""Fill a model straight from a GGUF file: its quantized blocks become `models.quant` weights.

    GGUF tensor                     our weight
    Q4_K, Q4_0 (decoder linear)  -> int4, group 32, w = scale * q - offset (torch's int4 kernel)
    Q8_0, Q5_0 (decoder linear)  -> int8 codes per group of 32, run as two int4 planes (`QuantSum`)
    Q6_K       (decoder linear)  -> the same per 16: even and odd sixteens apart (four int4 planes)
    anything else, embeddings, norms, lm_head -> dense in the model dtype (gguf-py's dequantize)
    a tied lm_head (the embedding)       -> also int4 g32, top logits rescored from the dense rows

The same bits llama.cpp reads, without writing a float copy to disk. A model directory that
runs this way holds the config and tokenizer of an import plus `GGUF_POINTER`, naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunelab.atomic import read_json_object
from tunelab.errors import ConfigError, CorruptModelFile

GGUF_POINTER = "gguf_weights.json"  # the file, its architecture and tensor table (see `pointer_text`)


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the file: ggml type name, numpy-order shape and its raw bytes (memory-mapped)."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    data: np.ndarray  # uint8


def gguf_source(model_dir: Path) -> Path | None:
    """The GGUF file `model_dir` takes its weights from, or None for a safetensors directory."""
    pointer = Path(model_dir) / GGUF_POINTER
    if not pointer.is_file():
        return None
    path = Path(str(read_json_object(pointer, CorruptModelFile).get("path", "")))
    if not path.is_file():
        raise CorruptModelFile(f"{pointer}: the GGUF file it names is gone: {path}")
    return path


def pointer_text(gguf_path: Path, reader) -> str:
    """The contents of `GGUF_POINTER` for `gguf_path` read by `reader` (a gguf.GGUFReader): its
    tensor table is kept, because parsing the file's header again (a 262k-token vocabulary of
    Python objects) takes longer than loading the weights."""
    tensors = [[t.name, t.tensor_type.name, [int(n) for n in reversed(t.shape)], int(t.data_offset), int(t.n_bytes)]
               for t in reader.tensors]
    arch = str(reader.fields["general.architecture"].contents())
    return json.dumps({"path": str(Path(gguf_path).resolve()), "arch": arch, "tensors": tensors})


def read_tensors(model_dir: Path) -> tuple[str, list[GGUFTensor]]:
    """(architecture, tensors) of the GGUF file `model_dir` points at, memory-mapped."""
    info = read_json_object(Path(model_dir) / GGUF_POINTER, CorruptModelFile)
    path = gguf_source(model_dir)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    if any(off + size > mm.size for _, _, _, off, size in info["tensors"]):
        raise CorruptModelFile(f"{path}: truncated GGUF file (a tensor runs past the end)")
    return info["arch"], [GGUFTensor(name, kind, tuple(shape), mm[off:off + size])
                          for name, kind, shape, off, size in info["tensors"]]


def fill_from_gguf(model: nn.Module, model_dir: Path, config, dtype: torch.dtype) -> None:
    """Load every tensor of the GGUF `model_dir` points at into `model` (built empty, tied weights
    already shared)."""
    from tunelab.models.gguf_families import BY_ARCH, IGNORED
    from tunelab.models.loader import FUSED, _check_complete, _load_one, _our_name
    from tunelab.models.quant import QuantSpec, quantize_tied_head, stack_rows

    arch, tensors = read_tensors(model_dir)
    gguf_path = gguf_source(model_dir)
    family = BY_ARCH[arch]
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    fused: dict[str, dict[str, object]] = {}
    for t in tensors:
        if t.name in IGNORED:
            continue
        if (name := _our_name(family.hf_name(t.name) or "", "")) is None:
            raise CorruptModelFile(f"{gguf_path}: tensor '{t.name}' has no counterpart in {family.arch}")
        owner, _, proj = name[:-len(".weight")].rpartition(".")
        if name.endswith(".weight") and _quantizable(t, name):
            q = _quant_weight(t, family, heads, kv, dtype)
            if proj in FUSED:
                fused.setdefault(f"{owner}.{FUSED[proj]}", {})[proj] = q
            else:
                modules[f"{owner}.{proj}"].use_quantized(q)
                loaded.add(name)
            continue
        loaded |= _load_one(name, torch.from_numpy(_dense(t, family, heads, kv)), params, modules, gguf_path)
    for module_name, parts in fused.items():
        module = modules[module_name]
        if set(parts) != set(module.slices):
            raise CorruptModelFile(f"{gguf_path}: {module_name} needs {', '.join(module.slices)}, found only "
                                   f"{', '.join(parts)} quantized")
        module.use_quantized(stack_rows([parts[p] for p in module.slices]))
        loaded.add(f"{module_name}.weight")
    _check_complete(model, params, loaded, gguf_path)
    # a tied output layer is the file's embedding (Q8_0 in a Q4_K_M), dense here: int4 with its top
    # logits rescored from the dense rows reads a quarter of the bytes per token (models.quant)
    quantize_tied_head(model, QuantSpec.parse("int4"))


def _quantizable(tensor: GGUFTensor, name: str) -> bool:
    from tunelab.models.gguf_blocks import LAYOUTS

    return tensor.type_name in LAYOUTS and ".layers." in name and name.endswith("_proj.weight")


def _dense(tensor: GGUFTensor, family, heads: int, kv: int) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    w = dequantize(tensor.data, GGMLQuantizationType[tensor.type_name]).reshape(tensor.shape)
    w = w.astype(np.float32, copy=False)
    return np.ascontiguousarray(family.from_gguf(tensor.name, w, heads, kv))


def _quant_weight(tensor: GGUFTensor, family, heads: int, kv: int, dtype: torch.dtype):
    """One decoder linear's blocks -> QuantWeight / QuantSum, rows fixed up as an import would."""
    from tunelab.models.gguf_blocks import decode
    from tunelab.models.quant import QuantSum, QuantWeight

    rows, cols = tensor.shape
    codes, scale, offset = decode(tensor.type_name, tensor.data, rows, cols)
    codes, scale = family.from_gguf(tensor.name, codes, heads, kv), family.from_gguf(tensor.name, scale, heads, kv)
    if offset is not None:  # rows permute (llama q/k); the blocks run along inputs, so they stay exact
        return QuantWeight.from_codes(codes, scale, family.from_gguf(tensor.name, offset, heads, kv), dtype)
    return QuantSum.nibbles(codes, scale, dtype)


def check_gguf_load(quantize: str | None, device: torch.device, gguf_path: Path) -> None:
    """GGUF weights are already quantized, and torch's int4 kernel runs on CPU only."""
    if quantize is not None:
        raise ConfigError(f"quantize={quantize}: {gguf_path.name} runs on its own quantized tensors; to "
                          f"requantize, pull it as float first (`tunelab pull {gguf_path}`) and load that")
    if device.type != "cpu":
        raise ConfigError(f"{gguf_path.name}: GGUF weights run on CPU only (the int4 kernel); pull it as "
                          f"float (`tunelab pull {gguf_path}`) to run on '{device}'")
