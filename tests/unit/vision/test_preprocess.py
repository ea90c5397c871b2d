"""Qwen2-VL resizing and token counts match transformers' own image processor."""

from __future__ import annotations

import pytest
from PIL import Image

from tunelab.vision.preprocess import VisionGrid, grid_of, image_grid, image_processor, image_tokens, pixel_inputs


@pytest.mark.parametrize("size", [(50, 40), (2000, 1500), (28, 28), (640, 480), (10, 300), (57, 29)])
def test_grid_and_token_count_match_the_processor(size):
    processor = image_processor()
    out = pixel_inputs([Image.new("RGB", size, (10, 200, 30))], processor)
    width, height = size
    t, h, w = out["image_grid_thw"][0].tolist()
    assert (t, h, w) == image_grid(height, width)
    assert out["pixel_values"].shape == (t * h * w, 3 * 2 * 14 * 14)
    assert image_tokens(height, width) == t * h * w // 4


def test_a_small_pixel_budget_changes_grid_like_the_processor():
    grid = VisionGrid(min_pixels=28 * 28, max_pixels=56 * 56)
    processor = image_processor(grid=grid)
    assert grid_of(processor) == grid
    out = pixel_inputs([Image.new("RGB", (300, 200))], processor)
    assert out["image_grid_thw"][0].tolist() == list(image_grid(200, 300, grid)) == [1, 2, 4]
    assert image_tokens(200, 300, grid) == 2


def test_the_model_config_is_read_from_the_model_dir(tmp_path):
    image_processor(grid=VisionGrid(min_pixels=28 * 28, max_pixels=28 * 28 * 4)).save_pretrained(tmp_path)
    assert grid_of(image_processor(tmp_path)).max_pixels == 28 * 28 * 4
