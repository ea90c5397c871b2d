"""Which model types are vision-language models, how each writes an image in the prompt, and what
tunelab can do with them.

A model folder is a VLM when its config.json `model_type` is in `VISION_TYPES` (Gemma 3 only with a
`vision_config`). `TRAINABLE` families have tunelab's data and training path, `SERVED` ones run in
tunelab's engine with images. `ImageFormat` holds a family's facts: its image tokens, its position
scheme, its attention among image tokens and the module names of its tower and projector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TRAINABLE = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3")
# the engine runs these with images (models/qwen_vl.py, models/qwen3_vl.py, models/gemma3_vl.py)
SERVED = ("qwen2_5_vl", "qwen3_vl", "gemma3")
VISION_TYPES = (*TRAINABLE, "qwen3_vl_moe", "llava", "mllama", "paligemma", "idefics3", "smolvlm")


@dataclass(frozen=True)
class ImageFormat:
    """How a family's prompt holds an image: `before` + `pad` x image tokens + `after`."""

    pad: str  # the placeholder token whose rows the tower's output replaces
    before: str  # text before the pads (the image's start token)
    after: str  # text after them
    tower: str  # the vision tower's module name (frozen unless freeze_vision_tower=false)
    projector: str  # the projector's module name (trains with train_projector)
    mrope: bool = False  # Qwen2-VL's 3-axis rotary positions; else plain 1-D positions
    bidirectional: bool = False  # an image's tokens attend to each other both ways at prefill
    start: str = ""  # a bare token that stands for a whole image in a text prompt (Gemma 3's <start_of_image>)

    @property
    def placeholder(self) -> str:
        """What a prompt writes where an image goes (the engine repeats `pad` once per image token)."""
        return self.before + self.pad + self.after


QWEN2_VL = ImageFormat("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "visual", "merger", mrope=True)
# Gemma3Processor's `full_image_sequence`: the chat template's <start_of_image> grows into this
GEMMA3 = ImageFormat("<image_soft_token>", "\n\n<start_of_image>", "<end_of_image>\n\n", "vision_tower",
                     "multi_modal_projector", bidirectional=True, start="<start_of_image>")
IMAGE_PAD = QWEN2_VL.pad
_FORMATS = {"gemma3": GEMMA3}  # model_type -> format; the Qwen2-VL family's is the default


def format_of(kind: str | None) -> ImageFormat:
    """The image format of a VLM's config.json `model_type`."""
    return _FORMATS.get(kind or "", QWEN2_VL)


def model_type(model_dir: str | Path) -> str | None:
    """config.json's model_type, or None when there is no readable config."""
    return model_config(model_dir).get("model_type")


def model_config(model_dir: str | Path | None) -> dict:
    """config.json of `model_dir` as a dict; {} when there is none or it is unreadable."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")) if model_dir else {}
    except (OSError, ValueError):
        return {}


def image_format(model_dir: str | Path | None) -> ImageFormat:
    """The image format of the model in `model_dir`: Gemma 3's for a Gemma 3 VLM, else Qwen2-VL's."""
    return format_of(model_type(model_dir)) if is_vision_model(model_dir) else QWEN2_VL


def serves_images(model_dir: str | Path) -> bool:
    """Whether tunelab's engine takes images for the model in `model_dir`."""
    return model_type(model_dir) in SERVED and is_vision_model(model_dir)


def is_vision_model(model_dir: str | Path | None) -> bool:
    """Whether the folder holds a vision-language model (Gemma 3 counts only with its vision config)."""
    config = model_config(model_dir)
    kind = config.get("model_type")
    if kind == "gemma3":
        return "vision_config" in config
    return kind in VISION_TYPES
