"""Images in the engine: a prompt's pixels and M-RoPE positions, and where image rows go in a step.

`ImageInputs` rides on a Sequence (`seq.images`). It is built once when the request arrives (pixels
by vision/preprocess.py, positions by models/mrope.py, a content hash per image); the vision tower's
rows are computed at the first prefill chunk that holds image tokens and kept while the sequence
lives, so a preempted sequence recomputes its KV, not its image rows.

Each row of a step gets its rotary position from `rope_positions` (the token index shifted by the
prompt's M-RoPE delta once past the prompt; `AttnBatch.positions`), so decode steps, CUDA graphs
included, need nothing else. A step whose chunks hold image tokens also gets an `ImagePlan`: which
rows take which image rows, and every row's (time, height, width) position.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from tunelab.errors import InvalidRequest


@dataclass
class ImageInputs:
    """A prompt's images as the model takes them, and its token layout."""

    pixel_values: torch.Tensor  # (patches, C*T*P*P), images in prompt order
    grid_thw: torch.Tensor  # (images, 3)
    positions: list[list[int]]  # [time, height, width] M-RoPE position of each prompt token
    delta: int  # rotary position minus token index, for every token after the prompt's last image
    token_index: list[int]  # prompt index of each image token, ascending (image row k goes to token_index[k])
    spans: list[tuple[int, int, str]]  # (first, end) token index and content hash of each image
    embeds: torch.Tensor | None = field(default=None, repr=False)  # (image tokens, hidden), once computed

    def rope_position(self, pos: int) -> int:
        """The 1-D rotary position of token `pos` (a text token's, on every axis)."""
        return self.positions[0][pos] if pos < len(self.positions[0]) else pos + self.delta

    def block_key(self, block: int, block_size: int) -> tuple[str, ...]:
        """Content hashes of the images with tokens in KV block `block`: part of its prefix-cache key."""
        lo, hi = block * block_size, (block + 1) * block_size
        return tuple(digest for first, end, digest in self.spans if first < hi and end > lo)

    def rows_between(self, start: int, end: int) -> tuple[int, int]:
        """[a, b): the image rows whose tokens lie in prompt positions [start, end)."""
        return bisect.bisect_left(self.token_index, start), bisect.bisect_left(self.token_index, end)


def build_image_inputs(prompt_ids: list[int], images: Sequence[Any], processor: Any, image_token_id: int,
                       merge: int) -> ImageInputs:
    """`ImageInputs` for PIL `images`, one per run of image tokens in `prompt_ids`, in order."""
    from tunelab.models.mrope import mrope_positions
    from tunelab.vision.preprocess import pixel_inputs

    pixels = pixel_inputs(list(images), processor)
    grids = [tuple(int(v) for v in g) for g in pixels["image_grid_thw"]]
    try:
        positions, delta = mrope_positions(prompt_ids, image_token_id, grids, merge)
    except ValueError as err:
        raise InvalidRequest(f"{len(grids)} image(s) and the prompt's image tokens disagree: {err}",
                             param="images") from None
    token_index = [i for i, t in enumerate(prompt_ids) if t == image_token_id]
    spans, k, first_patch = [], 0, 0
    for t, h, w in grids:
        count, patches = t * h * w // merge**2, t * h * w
        digest = _digest(pixels["pixel_values"][first_patch:first_patch + patches], (t, h, w))
        spans.append((token_index[k], token_index[k + count - 1] + 1, digest))
        k, first_patch = k + count, first_patch + patches
    return ImageInputs(pixels["pixel_values"], pixels["image_grid_thw"], positions, delta, token_index, spans)


def _digest(pixels: torch.Tensor, grid: tuple[int, int, int]) -> str:
    """A content hash of one image's pixel values and grid (what the model sees of it)."""
    h = hashlib.blake2b(repr(grid).encode(), digest_size=16)
    h.update(pixels.contiguous().float().numpy().tobytes())
    return h.hexdigest()


def rope_positions(seq, start: int, n: int) -> Sequence[int]:
    """Rotary positions of a sequence's tokens [start, start + n)."""
    images = getattr(seq, "images", None)
    if images is None:
        return range(start, start + n)
    return [images.rope_position(p) for p in range(start, start + n)]


@dataclass
class ImageRows:
    """What the model needs for a step with image tokens (models/qwen_vl.py)."""

    rows: torch.Tensor  # (N,) flat rows of the image tokens in this step
    embeds: torch.Tensor  # (N, hidden) their image rows
    positions: torch.Tensor  # (3, T) every row's M-RoPE position


@dataclass
class ImagePlan:
    """Image rows of a step, planned under the engine lock; tower outputs are fetched at `rows_for`."""

    parts: list[tuple[int, ImageInputs, int, int]]  # (first flat row, inputs, image rows a..b)
    positions: torch.Tensor  # (3, T)

    def rows_for(self, model) -> ImageRows:
        """Run the vision tower for sequences that need it first; the step's `ImageRows`."""
        rows, embeds = [], []
        for row0, inputs, a, b in self.parts:
            if inputs.embeds is None:
                inputs.embeds = model.encode_images(inputs.pixel_values, inputs.grid_thw)
            rows.extend(row0 + p for p in inputs.token_index[a:b])
            embeds.append(inputs.embeds[a:b])
        device = self.positions.device
        return ImageRows(torch.tensor(rows, dtype=torch.long, device=device), torch.cat(embeds), self.positions)


def plan_images(items, positions: list[int], device: torch.device) -> ImagePlan | None:
    """The step's `ImagePlan`, or None when no chunk holds an image token (the usual case)."""
    parts = []
    axes = None
    row = 0
    for item in items:
        images = getattr(item.seq, "images", None)
        start, n = item.start_pos, item.num_tokens
        if images is not None:
            a, b = images.rows_between(start, start + n)
            if a < b:
                if axes is None:
                    axes = torch.tensor(positions, dtype=torch.long).repeat(3, 1)  # text rows: equal axes
                parts.append((row - start, images, a, b))
                end = min(start + n, len(images.positions[0]))
                axes[:, row:row + end - start] = torch.tensor([axis[start:end] for axis in images.positions])
        row += n
    return ImagePlan(parts, axes.to(device)) if parts else None
