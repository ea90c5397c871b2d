"""Safetensors files without loading them: check headers, count parameters, stream-write.

A safetensors file is an 8-byte little-endian header length, a JSON header of
`{name: {dtype, shape, data_offsets}}`, then the raw tensor bytes back to back.
Reading only the header lets `pull` reject a truncated file in milliseconds, and
writing it ourselves lets GGUF import dequantize one tensor at a time.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tunelab.errors import CorruptModelFile
from tunelab.store.staging import naming, write_all, write_text

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
TORCH_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
MAX_HEADER = 100 << 20  # the format caps headers at 100 MB


def read_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file; raises CorruptModelFile naming the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CorruptModelFile(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise CorruptModelFile(f"{path}: corrupt or truncated safetensors header")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CorruptModelFile(f"{path}: corrupt safetensors header (not JSON)") from None
    header.pop("__metadata__", None)
    _check_offsets(path, header, size - 8 - n)
    return header


def _check_offsets(path: Path, header: dict, data_size: int) -> None:
    end = 0
    for name, info in header.items():
        try:
            start, stop = info["data_offsets"]
            want = math.prod(info["shape"]) * DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CorruptModelFile(f"{path}: malformed safetensors entry for tensor '{name}'") from None
        if stop - start != want:
            raise CorruptModelFile(f"{path}: tensor '{name}' has {stop - start} bytes, expected {want}")
        end = max(end, stop)
    if end != data_size:
        raise CorruptModelFile(
            f"{path}: truncated safetensors file (tensor data needs {end} bytes, file has {data_size})"
        )


@dataclass
class WeightsSummary:
    """What `tunelab list` shows about a model's weights."""

    params: int
    dtype: str


def summarize(model_dir: Path) -> WeightsSummary:
    """Check every safetensors file in `model_dir`; count parameters; find the main dtype."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise CorruptModelFile(f"{model_dir}: no *.safetensors weights found")
    params, by_dtype = 0, Counter()
    for path in files:
        for info in read_header(path).values():
            count = math.prod(info["shape"])
            params += count
            by_dtype[info["dtype"]] += count * DTYPE_BYTES[info["dtype"]]
    main = by_dtype.most_common(1)[0][0] if by_dtype else ""
    return WeightsSummary(params=params, dtype=TORCH_NAMES.get(main, main.lower()))


@dataclass
class TensorSpec:
    """One tensor to write: its name, safetensors dtype, shape, and a producer of its bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    produce: Callable[[], bytes | memoryview]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def write_safetensors(out_dir: Path, specs: Iterable[TensorSpec], max_shard_bytes: int = 4 << 30) -> list[Path]:
    """Write tensors as (possibly sharded) safetensors, producing each tensor's bytes only
    when it is written so peak memory stays at one tensor. Returns the files written."""
    shards = _plan_shards(list(specs), max_shard_bytes)
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        _write_one(out_dir / name, shard)
    if len(shards) > 1:
        _write_index(out_dir, names, shards)
    return [out_dir / n for n in names]


def _plan_shards(specs: list[TensorSpec], max_bytes: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _write_one(path: Path, specs: list[TensorSpec]) -> None:
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format wants tensor data 8-byte aligned
    with naming(path), open(path, "wb", buffering=0) as f:
        write_all(f.fileno(), struct.pack("<Q", len(raw)) + raw)
        for spec in specs:
            data = spec.produce()
            if len(memoryview(data).cast("B")) != spec.nbytes:
                raise ValueError(f"tensor {spec.name}: produced the wrong number of bytes")
            write_all(f.fileno(), data)


def _write_index(out_dir: Path, names: list[str], shards: list[list[TensorSpec]]) -> None:
    weight_map = {spec.name: name for name, shard in zip(names, shards) for spec in shard}
    total = sum(spec.nbytes for shard in shards for spec in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_text(out_dir / "model.safetensors.index.json", json.dumps(index, indent=2))


def tensor_shapes(path: Path) -> dict[str, tuple]:
    """Tensor name -> shape for a safetensors file or every one in a directory (headers only)."""
    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else [Path(path)]
    return {name: tuple(info["shape"]) for file in files for name, info in read_header(file).items()}


def check_adapter_fits_base(adapter_dir: Path, base_dir: Path) -> None:
    """Raise RunError unless every LoRA matrix in `adapter_dir` matches the shape of its base weight."""
    from tunelab.errors import RunError

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return  # a legacy .bin adapter: PEFT itself checks shapes on load
    base_shapes = tensor_shapes(base_dir)
    for name, shape in tensor_shapes(weights).items():
        module, kind = _lora_module(name)
        if module is None:
            continue
        base = _find_base_shape(base_shapes, module)
        if base is None:
            raise RunError(f"adapter trained on a different base model: {adapter_dir} has "
                           f"'{module}' but {base_dir} has no such weight")
        dim, want = (shape[1], base[1]) if kind == "lora_A" else (shape[0], base[0])
        if dim != want:
            raise RunError(f"adapter trained on a different base model: '{module}' expects size "
                           f"{dim} but {base_dir} has {want}")


def _lora_module(name: str) -> tuple[str | None, str]:
    for kind in ("lora_A", "lora_B"):
        if f".{kind}." in name:
            return name.split(f".{kind}.")[0].removeprefix("base_model.model."), kind
    return None, ""


def _find_base_shape(base_shapes: dict[str, tuple], module: str) -> tuple | None:
    # PEFT prefixes differ by task wrapper; match on the longest common suffix.
    key = module + ".weight"
    if key in base_shapes:
        return base_shapes[key]
    for name, shape in base_shapes.items():
        if name.endswith(key) or key.endswith(name):
            return shape
    return None
