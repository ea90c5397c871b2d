"""Images in the engine: a prompt's pixels and positions, and where image rows go in a step.

`ImageInputs` rides on a Sequence (`seq.images`). It is built once when the request arrives (pixels
by vision/preprocess.py, Qwen's M-RoPE positions by models/mrope.py, a content hash per image); the vision tower's
rows are computed at the first prefill chunk that holds image tokens and kept while the sequence
lives, so a preempted sequence recomputes its KV, not its image rows.

Each row of a step gets its rotary position from `rope_positions` (the token index shifted by the
prompt's M-RoPE delta once past the prompt; `AttnBatch.positions`), so decode steps, CUDA graphs
included, need nothing else. A step whose chunks hold image tokens also gets an `ImagePlan`: which
rows take which image rows, and (M-RoPE) every row's (time, height, width) position.

A family whose image tokens attend to each other both ways at prefill (Gemma 3, `bidirectional`)
needs each image's tokens in one prefill chunk: the scheduler asks `chunk_tokens` where a chunk may
end, and the runner gives each prefill segment the image spans it must not mask (`image_blocks`).
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

    pixel_values: torch.Tensor  # Qwen: (patches, C*T*P*P); Gemma 3: (images, C, S, S); images in prompt order
    grid_thw: torch.Tensor | None  # (images, 3) for Qwen's tower
    positions: list[list[int]] | None  # [time, height, width] M-RoPE position of each prompt token; None: 1-D
    delta: int  # rotary position minus token index, for every token after the prompt's last image
    token_index: list[int]  # prompt index of each image token, ascending (image row k goes to token_index[k])
    spans: list[tuple[int, int, str]]  # (first, end) token index and content hash of each image
    bidirectional: bool = False  # an image's tokens see each other both ways at prefill (Gemma 3)
    embeds: torch.Tensor | None = field(default=None, repr=False)  # (image tokens, hidden), once computed

    def rope_position(self, pos: int) -> int:
        """The 1-D rotary position of token `pos` (a text token's, on every axis)."""
        if self.positions is None:
            return pos
        return self.positions[0][pos] if pos < len(self.positions[0]) else pos + self.delta

    def chunk_tokens(self, start: int, n: int) -> int:
        """How many of `n` prefill tokens from `start` to run now: a bidirectional image is never cut,
        so a chunk ending inside one stops before it, or (when it starts there) runs to its end."""
        if not self.bidirectional:
            return n
        for first, end, _ in self.spans:
            if first < start + n < end:
                return first - start if first > start else end - start
        return n

    def block_key(self, block: int, block_size: int) -> tuple[str, ...]:
        """Content hashes of the images with tokens in KV block `block`: part of its prefix-cache key."""
        lo, hi = block * block_size, (block + 1) * block_size
        return tuple(digest for first, end, digest in self.spans if first < hi and end > lo)

    def rows_between(self, start: int, end: int) -> tuple[int, int]:
        """[a, b): the image rows whose tokens lie in prompt positions [start, end)."""
        return bisect.bisect_left(self.token_index, start), bisect.bisect_left(self.token_index, end)


def build_image_inputs(prompt_ids: list[int], images: Sequence[Any], processor: Any, model: Any) -> ImageInputs:
    """`ImageInputs` for PIL `images`, one per run of `model.image_token_id` tokens in `prompt_ids`, in order.
    The model class says how images take tokens: `merge_size` (Qwen's M-RoPE grids) or `tokens_per_image`."""
    from tunelab.vision.preprocess import pixel_inputs

    pad = model.image_token_id
    pixels = pixel_inputs(list(images), processor)
    grid_thw = pixels.get("image_grid_thw")
    try:
        if grid_thw is not None:
            positions, delta, counts, sizes = _mrope_layout(prompt_ids, pad, grid_thw, model.merge_size)
        else:
            positions, delta, counts, sizes = None, 0, [model.tokens_per_image] * len(images), [1] * len(images)
            _check_runs(prompt_ids, pad, counts)
    except ValueError as err:
        raise InvalidRequest(f"{len(counts if grid_thw is None else grid_thw)} image(s) and the prompt's image "
                             f"tokens disagree: {err}", param="images") from None
    token_index = [i for i, t in enumerate(prompt_ids) if t == pad]
    spans, k, first_row = [], 0, 0
    for count, size in zip(counts, sizes):
        digest = _digest(pixels["pixel_values"][first_row:first_row + size], size)
        spans.append((token_index[k], token_index[k + count - 1] + 1, digest))
        k, first_row = k + count, first_row + size
    return ImageInputs(pixels["pixel_values"], grid_thw, positions, delta, token_index, spans,
                       bidirectional=positions is None and bool(getattr(model, "image_bidirectional", False)))


def _mrope_layout(prompt_ids, pad: int, grid_thw: torch.Tensor, merge: int):
    """Qwen2-VL: (M-RoPE positions, delta, image tokens per image, pixel rows per image)."""
    from tunelab.models.mrope import mrope_positions

    grids = [tuple(int(v) for v in g) for g in grid_thw]
    positions, delta = mrope_positions(prompt_ids, pad, grids, merge)
    return positions, delta, [t * h * w // merge**2 for t, h, w in grids], [t * h * w for t, h, w in grids]


def _check_runs(prompt_ids: list[int], pad: int, counts: list[int]) -> None:
    """ValueError unless the prompt's runs of `pad` are exactly `counts` long, one per image."""
    runs: list[int] = []
    for i, t in enumerate(prompt_ids):
        if t == pad and i and prompt_ids[i - 1] == pad:
            runs[-1] += 1
        elif t == pad:
            runs.append(1)
    if runs != counts:
        raise ValueError(f"{len(runs)} run(s) of image tokens of lengths {runs}; each image needs a run of "
                         f"{counts[0] if counts else 0}")


def _digest(pixels: torch.Tensor, grid) -> str:
    """A content hash of one image's pixel values and grid or size (what the model sees of it)."""
    h = hashlib.blake2b(repr(grid).encode(), digest_size=16)
    h.update(pixels.contiguous().float().numpy().tobytes())
    return h.hexdigest()


def rope_positions(seq, start: int, n: int) -> Sequence[int]:
    """Rotary positions of a sequence's tokens [start, start + n)."""
    images = getattr(seq, "images", None)
    if images is None or images.positions is None:
        return range(start, start + n)
    return [images.rope_position(p) for p in range(start, start + n)]


def image_blocks(seq, ctx: int) -> list[tuple[int, int]]:
    """(first, end) token spans of the images in a sequence's first `ctx` tokens whose tokens attend to
    each other both ways (Gemma 3); [] for causal-only families and text."""
    images = getattr(seq, "images", None)
    if images is None or not images.bidirectional:
        return []
    return [(first, end) for first, end, _ in images.spans if first < ctx]


@dataclass
class ImageRows:
    """What the model needs for a step with image tokens (models/qwen_vl.py)."""

    rows: torch.Tensor  # (N,) flat rows of the image tokens in this step
    embeds: torch.Tensor  # (N, hidden) their image rows
    positions: torch.Tensor | None  # (3, T) every row's M-RoPE position (Qwen); None: plain positions


@dataclass
class ImagePlan:
    """Image rows of a step, planned under the engine lock; tower outputs are fetched at `rows_for`."""

    parts: list[tuple[int, ImageInputs, int, int]]  # (first flat row, inputs, image rows a..b)
    positions: torch.Tensor | None  # (3, T) M-RoPE positions; None for 1-D families
    device: torch.device

    def rows_for(self, model) -> ImageRows:
        """Run the vision tower for sequences that need it first; the step's `ImageRows`."""
        rows, embeds = [], []
        for row0, inputs, a, b in self.parts:
            if inputs.embeds is None:
                inputs.embeds = model.encode_images(inputs.pixel_values, inputs.grid_thw)
            rows.extend(row0 + p for p in inputs.token_index[a:b])
            embeds.append(inputs.embeds[a:b])
        return ImageRows(torch.tensor(rows, dtype=torch.long, device=self.device), torch.cat(embeds), self.positions)


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
                parts.append((row - start, images, a, b))
            if a < b and images.positions is not None:
                if axes is None:
                    axes = torch.tensor(positions, dtype=torch.long).repeat(3, 1)  # text rows: equal axes
                end = min(start + n, len(images.positions[0]))
                axes[:, row:row + end - start] = torch.tensor([axis[start:end] for axis in images.positions])
        row += n
    return ImagePlan(parts, None if axes is None else axes.to(device), device) if parts else None
