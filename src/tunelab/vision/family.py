"""Which model types are vision-language models, and which of them tunelab can train.

A model folder is a VLM when its config.json `model_type` is in `VISION_TYPES`; only the
Qwen2-VL family (`TRAINABLE`) has tunelab's data and training path so far, and only Qwen2.5-VL
(`SERVED`) runs in tunelab's engine with images.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAINABLE = ("qwen2_vl", "qwen2_5_vl")
SERVED = ("qwen2_5_vl",)  # the engine runs these with images (models/qwen_vl.py)
VISION_TYPES = (*TRAINABLE, "qwen3_vl", "gemma3", "llava", "mllama", "paligemma", "idefics3", "smolvlm")
VISION_TOWER = "visual"  # Qwen2-VL: model.visual (blocks = the tower, merger = the projector)
PROJECTOR = "merger"
IMAGE_PAD = "<|image_pad|>"


def model_type(model_dir: str | Path) -> str | None:
    """config.json's model_type, or None when there is no readable config."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def serves_images(model_dir: str | Path) -> bool:
    """Whether tunelab's engine takes images for the model in `model_dir`."""
    return model_type(model_dir) in SERVED


def is_vision_model(model_dir: str | Path) -> bool:
    """Whether the folder holds a vision-language model (Gemma 3 counts only with its vision config)."""
    kind = model_type(model_dir)
    if kind == "gemma3":
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        return "vision_config" in config
    return kind in VISION_TYPES
