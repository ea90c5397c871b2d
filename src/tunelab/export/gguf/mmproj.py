"""The mmproj file llama.cpp's multimodal tools (mtmd / clip) load beside a VLM's language-model GGUF.

Qwen2.5-VL (`clip.projector_type` qwen2.5vl_merger) is written here, Gemma 3 (gemma3) by
mmproj_gemma3.py's keys and names, Qwen3-VL (qwen3vl_merger) by mmproj_qwen3vl.py's. llama.cpp's
clip graph for Qwen2.5-VL hard-codes what the HF config could vary, so a model that differs is refused
before anything is written: a 112-pixel attention window, 2x2 spatial merge, a temporal patch of 2, and
full-attention blocks at a regular period (`clip.vision.n_wa_pattern`). Tensors follow llama.cpp's converter: the
Conv3D patch embedding becomes two Conv2D kernels (`v.patch_embd.weight`, `.weight.1`), the fused
qkv is split into q, k and v, the merger is `v.post_ln` + `mm.0` / `mm.2`. Matrices are stored
as f16 whatever --quant the language model gets (llama.cpp's own default for mmproj), vectors as f32.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tunelab.atomic import atomic_file
from tunelab.export.errors import ExportError

PROJECTOR_TYPES = {"qwen2_5_vl": "qwen2.5vl_merger", "gemma3": "gemma3", "qwen3_vl": "qwen3vl_merger"}
LLAMA_CPP_WINDOW = 112  # llama.cpp's clip graph: attn_window_size = 112 (pixels)
LLAMA_CPP_MERGE = 2  # llama.cpp's window layout assumes merge_ratio = 2
_PREFIXES = ("model.visual.", "visual.")
_BLOCK = {"attn.proj": "attn_out", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "norm1": "ln1", "norm2": "ln2"}
_GLOBAL = {"merger.ln_q": "v.post_ln", "merger.mlp.0": "mm.0", "merger.mlp.2": "mm.2"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


@dataclasses.dataclass
class MmprojPlan:
    """What the mmproj file will hold: its keys and (HF name, safetensors file) per vision tensor."""

    model_dir: Path
    keys: dict
    tensors: list[tuple[str, str, Path]]  # (full HF name, name without the tower prefix, file)


def mmproj_name(gguf_name: str) -> str:
    """llama.cpp's naming: the projector of `x.gguf` is `mmproj-x.gguf` beside it."""
    return f"mmproj-{gguf_name}"


def plan_mmproj(model_dir: Path) -> MmprojPlan:
    """Check the vision tower against what llama.cpp runs and map its tensors; writes nothing."""
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    kind = config.get("model_type")
    if kind not in PROJECTOR_TYPES:
        raise ExportError(f"{config_path}: {kind} is a vision-language model whose mmproj file tunelab does "
                          f"not write (supported: {', '.join(PROJECTOR_TYPES)}). Nothing was written; serve "
                          "or evaluate it with transformers instead")
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or config
    if kind == "gemma3":
        from tunelab.export.gguf.mmproj_gemma3 import gemma3_keys

        keys = gemma3_keys(config_path, config)
    elif kind == "qwen3_vl":
        from tunelab.export.gguf.mmproj_qwen3vl import qwen3vl_keys

        keys = qwen3vl_keys(config_path, config)
    else:
        keys = _keys(config_path, kind, vision, int(text["hidden_size"]), float(text.get("rms_norm_eps", 1e-6)))
    keys.update(_preprocessor(model_dir))
    return MmprojPlan(model_dir, keys, _tensors_of(keys, model_dir))


def retarget(plan: MmprojPlan, source: Path) -> MmprojPlan:
    """The same plan reading the vision tensors from `source` (a run's merged model)."""
    if Path(source) == plan.model_dir:
        return plan
    return dataclasses.replace(plan, tensors=_tensors_of(plan.keys, Path(source)))


def _tensors_of(keys: dict, model_dir: Path) -> list[tuple[str, str, Path]]:
    """The planned vision tensors of `model_dir` for the family `keys` describe."""
    if keys["projector_type"] == "gemma3":
        return _gemma3_tensors(model_dir, int(keys["block_count"]))
    if keys["projector_type"] == PROJECTOR_TYPES["qwen3_vl"]:
        return _qwen3vl_tensors(model_dir, keys)
    return _vision_tensors(model_dir, int(keys["block_count"]))


def _keys(where: Path, kind: str, vision: dict, text_width: int, eps: float) -> dict:
    _require(where, vision, "window_size", LLAMA_CPP_WINDOW)
    _require(where, vision, "spatial_merge_size", LLAMA_CPP_MERGE)
    _require(where, vision, "temporal_patch_size", 2)
    full = [int(i) for i in vision.get("fullatt_block_indexes") or []]
    period = full[0] + 1 if full else 0
    if not full or any(b - a != period for a, b in zip(full, full[1:])):
        raise ExportError(f"{where}: vision_config.fullatt_block_indexes {full} is not a regular period, the "
                          "only layout llama.cpp's clip.vision.n_wa_pattern describes; nothing was written")
    return {"projector_type": PROJECTOR_TYPES[kind], "projection_dim": int(vision.get("out_hidden_size", text_width)),
            "image_size": int(vision.get("image_size", 560)), "patch_size": int(vision["patch_size"]),
            "embedding_length": int(vision["hidden_size"]), "feed_forward_length": int(vision["intermediate_size"]),
            "block_count": int(vision["depth"]), "head_count": int(vision["num_heads"]),
            "n_wa_pattern": period, "eps": eps}


def _require(where: Path, vision: dict, key: str, value: int) -> None:
    if int(vision.get(key, value)) != value:
        raise ExportError(f"{where}: vision_config.{key} is {vision[key]}, but llama.cpp's clip graph for this "
                          f"family fixes it at {value}; its mmproj would compute something else. Nothing was "
                          "written")


def _preprocessor(model_dir: Path) -> dict:
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        raise ExportError(f"{path}: missing; the mmproj file needs the image mean and std from it")
    pre = json.loads(path.read_text(encoding="utf-8"))
    for key in ("image_mean", "image_std"):
        if len(pre.get(key) or []) != 3:
            raise ExportError(f"{path}: '{key}' must list 3 channel values, got {pre.get(key)!r}")
    return {"image_mean": [float(x) for x in pre["image_mean"]], "image_std": [float(x) for x in pre["image_std"]]}


def _vision_tensors(model_dir: Path, depth: int) -> list[tuple[str, str, Path]]:
    from tunelab.store.weights import tensor_shapes

    out = []
    for file in sorted(model_dir.glob("*.safetensors")):
        for name in tensor_shapes(file):
            short = next((name[len(p):] for p in _PREFIXES if name.startswith(p)), None)
            if short is not None:
                if not _gguf_names(short):
                    raise ExportError(f"{file}: vision tensor '{name}' has no llama.cpp mmproj name")
                out.append((name, short, file))
    blocks = {int(m.group(1)) for _n, s, _f in out if (m := _BLOCK_RE.match(s))}
    if blocks != set(range(depth)) or not any(s.startswith("patch_embed.") for _n, s, _f in out):
        raise ExportError(f"{model_dir}: the vision tower's weights are incomplete (blocks {sorted(blocks)}, "
                          f"config depth {depth}); nothing was written")
    return out


def _qwen3vl_tensors(model_dir: Path, keys: dict) -> list[tuple[str, str, Path]]:
    """(checkpoint name, name inside the tower, file) of a Qwen3-VL's tower, merger and DeepStack tensors."""
    from tunelab.export.gguf.mmproj_qwen3vl import check_complete, gguf_names, short_name
    from tunelab.store.weights import tensor_shapes

    out = []
    for file in sorted(model_dir.glob("*.safetensors")):
        for name in tensor_shapes(file):
            if (short := short_name(name)) is not None:
                if not gguf_names(short, keys):
                    raise ExportError(f"{file}: vision tensor '{name}' has no llama.cpp mmproj name")
                out.append((name, short, file))
    check_complete(model_dir, [s for _n, s, _f in out], keys)
    return out


def _gemma3_tensors(model_dir: Path, depth: int) -> list[tuple[str, str, Path]]:
    """(checkpoint name, hub name, file) of a Gemma 3 VLM's tower and projector tensors llama.cpp loads."""
    from tunelab.export.gguf.mmproj_gemma3 import gguf_name, hub_name
    from tunelab.store.weights import tensor_shapes

    out = []
    for file in sorted(model_dir.glob("*.safetensors")):
        for name in tensor_shapes(file):
            hub = hub_name(name)
            if hub is not None and gguf_name(hub, depth) is not None:
                out.append((name, hub, file))
            elif hub is not None and ".head." not in hub:
                raise ExportError(f"{file}: vision tensor '{name}' has no llama.cpp mmproj name")
    blocks = {int(m.group(1)) for _n, h, _f in out if (m := re.search(r"\.layers\.(\d+)\.", h))}
    if blocks != set(range(depth)) or not any("mm_input_projection" in h for _n, h, _f in out):
        raise ExportError(f"{model_dir}: the vision tower's weights are incomplete (blocks {sorted(blocks)}, "
                          f"config depth {depth}, or no projector); nothing was written")
    return out


def _gguf_names(short: str) -> list[str]:
    """llama.cpp names for one HF vision tensor (three for a fused qkv, two for the 3D patch kernel)."""
    if short == "patch_embed.proj.weight":
        return ["v.patch_embd.weight", "v.patch_embd.weight.1"]
    if m := _BLOCK_RE.match(short):
        layer, part, kind = m.groups()
        if part == "attn.qkv":
            return [f"v.blk.{layer}.attn_{x}.{kind}" for x in "qkv"]
        return [f"v.blk.{layer}.{_BLOCK[part]}.{kind}"] if part in _BLOCK else []
    stem, _, kind = short.rpartition(".")
    return [f"{_GLOBAL[stem]}.{kind}"] if stem in _GLOBAL else []


def _split(short: str, data: np.ndarray) -> list[np.ndarray]:
    if short == "patch_embed.proj.weight":
        return [data[:, :, 0], data[:, :, 1]]  # Conv3D (out, in, t=2, h, w) -> two Conv2D kernels
    if ".attn.qkv." in short:
        return list(np.split(data, 3, axis=0))
    return [data]


def _arrays(plan: MmprojPlan) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    gemma3 = plan.keys["projector_type"] == "gemma3"
    for name, short, file in plan.tensors:
        with safe_open(str(file), framework="pt") as st:
            data = st.get_tensor(name).float().numpy()
        if gemma3:
            from tunelab.export.gguf.mmproj_gemma3 import gemma3_array, gguf_name

            yield gguf_name(short, int(plan.keys["block_count"])), gemma3_array(short, data)
        elif "deepstack" in plan.keys:
            from tunelab.export.gguf.mmproj_qwen3vl import gguf_names, split

            yield from zip(gguf_names(short, plan.keys), split(short, data))
        else:
            yield from zip(_gguf_names(short), _split(short, data))


def write_mmproj(plan: MmprojPlan, out: Path, log: Callable[[str], None] = print) -> Path:
    """Write the planned mmproj file to `out` atomically; returns `out`."""
    import gguf

    with atomic_file(Path(out)) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "clip")
        _write_keys(writer, plan)
        writer.add_file_type(1)  # llama_ftype MOSTLY_F16
        for name, data in _arrays(plan):
            half = data.ndim > 1 and "position_embd" not in name  # Gemma 3's positions are added in f32
            writer.add_tensor(name, np.ascontiguousarray(data.astype(np.float16 if half else np.float32)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    log(f"wrote {out} (vision tower and projector, f16, "
        f"{Path(out).stat().st_size / 2**20:.1f} MiB)")
    return Path(out)


def _write_keys(writer, plan: MmprojPlan) -> None:
    k = plan.keys
    writer.add_type("mmproj")
    writer.add_name(plan.model_dir.name)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(k["projector_type"])
    writer.add_vision_projection_dim(k["projection_dim"])
    writer.add_vision_image_size(k["image_size"])
    writer.add_vision_patch_size(k["patch_size"])
    writer.add_vision_embedding_length(k["embedding_length"])
    writer.add_vision_feed_forward_length(k["feed_forward_length"])
    writer.add_vision_block_count(k["block_count"])
    writer.add_vision_head_count(k["head_count"])
    writer.add_vision_image_mean(k["image_mean"])
    writer.add_vision_image_std(k["image_std"])
    writer.add_vision_attention_layernorm_eps(k["eps"])
    if "n_wa_pattern" in k:  # Qwen2.5-VL: SiLU MLP, windowed blocks
        writer.add_vision_use_silu(True)
        writer.add_vision_n_wa_pattern(k["n_wa_pattern"])
    if k.get("use_gelu"):  # Gemma 3's SigLIP, Qwen3-VL
        writer.add_vision_use_gelu(True)
    if "deepstack" in k:  # Qwen3-VL
        writer.add_vision_spatial_merge_size(k["spatial_merge_size"])
        writer.add_vision_is_deepstack_layers(k["deepstack"])
    if "scale_factor" in k:
        writer.add_vision_projector_scale_factor(k["scale_factor"])
