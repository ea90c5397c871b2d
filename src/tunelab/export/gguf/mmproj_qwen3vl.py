"""Qwen3-VL's mmproj file (`clip.projector_type` qwen3vl_merger): its tower, merger and DeepStack mergers.

llama.cpp's clip graph for it: a Conv3D patch embedding with bias (stored, as for Qwen2.5-VL, as two
Conv2D kernels), the learned position grid (`v.position_embd`, a side of `image_size / patch_size`,
resampled bilinearly to each image), layer-norm blocks with a fused qkv and a gelu MLP, the merger
(`v.post_ln`, `mm.0`, `mm.2`), and per DeepStack block `v.deepstack.{block}.{norm,fc1,fc2}`, named by
the tower block they read (`clip.vision.is_deepstack_layers`). Names follow llama.cpp's converter;
block tensors come from gguf's own table (`TensorNameMap`, MODEL_ARCH.MMPROJ).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from tunelab.export.errors import ExportError

PROJECTOR_TYPE = "qwen3vl_merger"
_PREFIXES = ("model.visual.", "visual.")
_MERGER = {"norm": "v.post_ln", "linear_fc1": "mm.0", "linear_fc2": "mm.2"}
_DEEPSTACK = {"norm": "norm", "linear_fc1": "fc1", "linear_fc2": "fc2"}
_DEEPSTACK_RE = re.compile(r"^deepstack_merger_list\.(\d+)\.(\w+)\.(weight|bias)$")


def qwen3vl_keys(where: Path, config: dict) -> dict:
    """The clip keys of a Qwen3-VL config.json; ExportError when llama.cpp's graph cannot run it."""
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    if int(vision.get("temporal_patch_size", 2)) != 2:
        raise ExportError(f"{where}: vision_config.temporal_patch_size is {vision['temporal_patch_size']}, but "
                          "llama.cpp's converter splits the patch kernel in two; nothing was written")
    positions, patch = int(vision.get("num_position_embeddings", 2304)), int(vision.get("patch_size", 16))
    side = math.isqrt(positions)
    if side * side != positions:
        raise ExportError(f"{where}: vision_config.num_position_embeddings {positions} is not a square grid, "
                          "which llama.cpp's position embedding needs; nothing was written")
    depth = int(vision["depth"])
    stack = [int(i) for i in vision.get("deepstack_visual_indexes") or []]
    if len(stack) >= int(text["num_hidden_layers"]):
        raise ExportError(f"{where}: {len(stack)} DeepStack levels for {text['num_hidden_layers']} decoder layers: "
                          "llama.cpp's qwen3vl graph cannot add one after the last layer (it keeps only the "
                          "output rows there); nothing was written")
    return {"projector_type": PROJECTOR_TYPE, "projection_dim": int(vision["out_hidden_size"]),
            "image_size": side * patch, "patch_size": patch, "embedding_length": int(vision["hidden_size"]),
            "feed_forward_length": int(vision["intermediate_size"]), "block_count": depth,
            "head_count": int(vision["num_heads"]), "eps": float(text.get("rms_norm_eps", 1e-6)), "use_gelu": True,
            "spatial_merge_size": int(vision.get("spatial_merge_size", 2)),
            "deepstack": [i in stack for i in range(depth)], "deepstack_indexes": stack}


def short_name(name: str) -> str | None:
    """A checkpoint tensor's name inside the tower (`blocks.0...`), or None for the language model's."""
    return next((name[len(p):] for p in _PREFIXES if name.startswith(p)), None)


def gguf_names(short: str, keys: dict) -> list[str]:
    """llama.cpp's names for one tower tensor (two for the 3-D patch kernel); [] when it has none."""
    import gguf

    if short == "patch_embed.proj.weight":
        return ["v.patch_embd.weight", "v.patch_embd.weight.1"]
    if short == "patch_embed.proj.bias":
        return ["v.patch_embd.bias"]
    stem, _, kind = short.rpartition(".")
    if stem.startswith("merger.") and stem[len("merger."):] in _MERGER:
        return [f"{_MERGER[stem[len('merger.'):]]}.{kind}"]
    if m := _DEEPSTACK_RE.match(short):
        level, part, kind = m.groups()
        if part in _DEEPSTACK and int(level) < len(keys["deepstack_indexes"]):
            return [f"v.deepstack.{keys['deepstack_indexes'][int(level)]}.{_DEEPSTACK[part]}.{kind}"]
        return []
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, int(keys["block_count"]))
    name = table.get_name(f"visual.{short}", try_suffixes=(".weight", ".bias"))
    return [name] if name else []


def split(short: str, data: np.ndarray) -> list[np.ndarray]:
    """The stored arrays of one tensor: the Conv3D patch kernel (out, in, t=2, h, w) as two Conv2D ones."""
    return [data[:, :, 0], data[:, :, 1]] if short == "patch_embed.proj.weight" else [data]


def check_complete(model_dir: Path, shorts: list[str], keys: dict) -> None:
    """ExportError unless every tower block, the patch embedding, the merger and each DeepStack merger are there."""
    blocks = {int(m.group(1)) for s in shorts if (m := re.match(r"^blocks\.(\d+)\.", s))}
    levels = {int(m.group(1)) for s in shorts if (m := _DEEPSTACK_RE.match(s))}
    if (blocks != set(range(keys["block_count"])) or levels != set(range(len(keys["deepstack_indexes"])))
            or "patch_embed.proj.weight" not in shorts or "merger.linear_fc2.weight" not in shorts):
        raise ExportError(f"{model_dir}: the vision tower's weights are incomplete (blocks {sorted(blocks)}, "
                          f"DeepStack mergers {sorted(levels)}); nothing was written")
