"""How a VLM sees an image. Qwen2-VL / Qwen2.5-VL: resized to multiples of 28 px within a pixel
budget, cut into 14-px patches, 2x2 patches merged into one token. Gemma 3: resized to the tower's
square (896 px), a fixed `mm_tokens_per_image` (256) tokens whatever the image's size.

`smart_resize` and `image_tokens` need no model, so `data check` can count image tokens; the
pixel values come from transformers' own image processor (`image_processor`, `pixel_inputs`),
so training sees exactly what the model's processor would give it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.vision.family import GEMMA3, QWEN2_VL, ImageFormat, image_format, model_config


@dataclass(frozen=True)
class VisionGrid:
    """How a model family sizes an image: a Qwen2-VL image processor's resizing knobs (its
    preprocessor_config.json defaults), or a fixed token count, and the family's `ImageFormat`."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    fixed_tokens: int = 0  # tokens per image whatever its size (Gemma 3's mm_tokens_per_image); 0: resize
    format: ImageFormat = QWEN2_VL

    @property
    def factor(self) -> int:
        """Side lengths are rounded to multiples of this (one merged token's side in pixels)."""
        return self.patch_size * self.merge_size


def smart_resize(height: int, width: int, grid: VisionGrid = VisionGrid()) -> tuple[int, int]:
    """(height, width) rounded to `grid.factor`, scaled to keep pixels within [min_pixels, max_pixels]."""
    factor = grid.factor
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be under 200, got {max(height, width) / min(height, width):.0f}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > grid.max_pixels:
        beta = math.sqrt((height * width) / grid.max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < grid.min_pixels:
        beta = math.sqrt(grid.min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def image_grid(height: int, width: int, grid: VisionGrid = VisionGrid()) -> tuple[int, int, int]:
    """(t, h, w) patches of one image, as the processor's `image_grid_thw` row."""
    h, w = smart_resize(height, width, grid)
    return 1, h // grid.patch_size, w // grid.patch_size


def image_tokens(height: int, width: int, grid: VisionGrid = VisionGrid()) -> int:
    """Image pad tokens one image takes in the prompt: patches / merge_size² (or the fixed count)."""
    if grid.fixed_tokens:
        return grid.fixed_tokens
    t, h, w = image_grid(height, width, grid)
    return t * h * w // grid.merge_size**2


def vision_grid(model_dir: str | Path | None) -> VisionGrid:
    """The model's resizing knobs from its preprocessor_config.json, else Qwen2-VL's defaults;
    Gemma 3's token count from its config.json."""
    if image_format(model_dir) is GEMMA3:
        return VisionGrid(fixed_tokens=int(model_config(model_dir).get("mm_tokens_per_image", 256)), format=GEMMA3)
    config = Path(model_dir) / "preprocessor_config.json" if model_dir else None
    if config is None or not config.is_file():
        return VisionGrid()
    return grid_of(image_processor(model_dir))


def ref_tokens(ref: str, grid: VisionGrid = VisionGrid()) -> int:
    """Image tokens of a resolved image reference (reads only the header for the size)."""
    from tunelab.vision.images import open_image

    with open_image(ref) as image:
        width, height = image.size
    return image_tokens(height, width, grid)


def image_processor(model_dir: str | Path | None = None, grid: VisionGrid | None = None) -> Any:
    """transformers' image processor of the model's family (Qwen2-VL's or Gemma 3's): the model's own
    config when it has one, else a Qwen2-VL one for `grid`."""
    from transformers import Gemma3ImageProcessorPil, Qwen2VLImageProcessorPil  # PIL backends: no torchvision

    if image_format(model_dir) is GEMMA3:
        return Gemma3ImageProcessorPil.from_pretrained(str(model_dir))
    if model_dir is not None and (Path(model_dir) / "preprocessor_config.json").is_file():
        return Qwen2VLImageProcessorPil.from_pretrained(str(model_dir))
    g = grid or VisionGrid()
    return Qwen2VLImageProcessorPil(patch_size=g.patch_size, merge_size=g.merge_size,
                                    temporal_patch_size=g.temporal_patch_size,
                                    size={"shortest_edge": g.min_pixels, "longest_edge": g.max_pixels})


def grid_of(processor: Any) -> VisionGrid:
    """The `VisionGrid` a transformers Qwen2-VL image processor uses."""
    size = processor.size
    return VisionGrid(processor.patch_size, processor.merge_size, processor.temporal_patch_size,
                      size["shortest_edge"], size["longest_edge"])


def pixel_inputs(images: list, processor: Any) -> dict:
    """Qwen2-VL: {'pixel_values': (patches, C·T·P·P), 'image_grid_thw': (n_images, 3)}; Gemma 3:
    {'pixel_values': (n_images, C, S, S)}; as torch tensors."""
    out = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    return {key: out[key] for key in ("pixel_values", "image_grid_thw") if key in out}
