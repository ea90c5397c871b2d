"""Fill a model straight from a GGUF file: its quantized blocks become `models.quant` weights.

    GGUF tensor                     our weight
    Q4_K, Q4_0 (decoder linear)  -> int4, group 32, w = scale * q - offset (torch's int4 kernel)
    Q8_0, Q5_0 (decoder linear)  -> int8 codes per group of 32, run as two int4 planes (`QuantSum`)
    Q6_K       (decoder linear)  -> int8 codes with one scale per 16 (dequantize + GEMM)
    anything else, embeddings, norms, lm_head -> dense in the model dtype (gguf-py's dequantize)

The same bits llama.cpp reads, without writing a float copy to disk. A model directory that
runs this way holds the config and tokenizer of an import plus `GGUF_POINTER`, naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunelab.atomic import read_json_object
from tunelab.errors import ConfigError, CorruptModelFile

GGUF_POINTER = "gguf_weights.json"  # {"path": absolute .gguf path}: the weights are that file's tensors


def gguf_source(model_dir: Path) -> Path | None:
    """The GGUF file `model_dir` takes its weights from, or None for a safetensors directory."""
    pointer = Path(model_dir) / GGUF_POINTER
    if not pointer.is_file():
        return None
    path = Path(str(read_json_object(pointer, CorruptModelFile).get("path", "")))
    if not path.is_file():
        raise CorruptModelFile(f"{pointer}: the GGUF file it names is gone: {path}")
    return path


def pointer_text(gguf_path: Path) -> str:
    """The contents of `GGUF_POINTER` for `gguf_path`."""
    return json.dumps({"path": str(Path(gguf_path).resolve())})


def fill_from_gguf(model: nn.Module, gguf_path: Path, config, dtype: torch.dtype) -> None:
    """Load every tensor of `gguf_path` into `model` (built empty, tied weights already shared)."""
    from tunelab.models.gguf_families import BY_ARCH, IGNORED
    from tunelab.models.loader import FUSED, _check_complete, _load_one, _our_name
    from tunelab.models.quant import stack_rows
    from tunelab.store.import_gguf import open_gguf

    reader = open_gguf(gguf_path)
    family = BY_ARCH[str(reader.fields["general.architecture"].contents())]
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    fused: dict[str, dict[str, object]] = {}
    for t in reader.tensors:
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


def _quantizable(tensor, name: str) -> bool:
    from tunelab.models.gguf_blocks import LAYOUTS

    return tensor.tensor_type.name in LAYOUTS and ".layers." in name and name.endswith("_proj.weight")


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dim first


def _dense(tensor, family, heads: int, kv: int) -> np.ndarray:
    from gguf.quants import dequantize

    w = dequantize(tensor.data, tensor.tensor_type).reshape(_shape(tensor)).astype(np.float32, copy=False)
    return np.ascontiguousarray(family.from_gguf(tensor.name, w, heads, kv))


def _quant_weight(tensor, family, heads: int, kv: int, dtype: torch.dtype):
    """One decoder linear's blocks -> QuantWeight / QuantSum, rows fixed up as an import would."""
    from tunelab.models.gguf_blocks import decode
    from tunelab.models.quant import QuantSum, QuantWeight

    rows, cols = _shape(tensor)
    codes, scale, offset = decode(tensor.tensor_type.name, tensor.data, rows, cols)
    codes, scale = family.from_gguf(tensor.name, codes, heads, kv), family.from_gguf(tensor.name, scale, heads, kv)
    if offset is not None:  # rows permute (llama q/k); the blocks run along inputs, so they stay exact
        return QuantWeight.from_codes(codes, scale, family.from_gguf(tensor.name, offset, heads, kv), dtype)
    if cols // scale.shape[1] == 32:
        return QuantSum.nibbles(codes, scale, dtype)
    return QuantWeight.from_codes(codes, scale, None, dtype)


def check_gguf_load(quantize: str | None, device: torch.device, gguf_path: Path) -> None:
    """GGUF weights are already quantized, and torch's int4 kernel runs on CPU only."""
    if quantize is not None:
        raise ConfigError(f"quantize={quantize}: {gguf_path.name} runs on its own quantized tensors; to "
                          f"requantize, pull it as float first (`tunelab pull {gguf_path}`) and load that")
    if device.type != "cpu":
        raise ConfigError(f"{gguf_path.name}: GGUF weights run on CPU only (the int4 kernel); pull it as "
                          f"float (`tunelab pull {gguf_path}`) to run on '{device}'")
