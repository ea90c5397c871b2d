"""How Qwen2-VL / Qwen2.5-VL see an image: resized to multiples of 28 px within a pixel budget,
cut into 14-px patches, 2x2 patches merged into one token.

`smart_resize` and `image_tokens` need no model, so `data check` can count image tokens; the
pixel values come from transformers' own image processor (`image_processor`, `pixel_inputs`),
so training sees exactly what the model's processor would give it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class VisionGrid:
    """The resizing knobs of a Qwen2-VL image processor (its preprocessor_config.json defaults)."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280

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
    """`<|image_pad|>` tokens one image takes in the prompt: patches / merge_size²."""
    t, h, w = image_grid(height, width, grid)
    return t * h * w // grid.merge_size**2


def vision_grid(model_dir: str | Path | None) -> VisionGrid:
    """The model's resizing knobs from its preprocessor_config.json, else Qwen2-VL's defaults."""
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
    """transformers' Qwen2-VL image processor: the model's own config when it has one, else `grid`."""
    from transformers import Qwen2VLImageProcessorPil  # the PIL backend: no torchvision needed

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
    """{'pixel_values': (patches, C·T·P·P), 'image_grid_thw': (n_images, 3)} as torch tensors."""
    out = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
