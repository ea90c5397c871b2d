"""Qwen2-VL's multimodal rotary positions (M-RoPE): three position axes, time, height and width.

A text token sits at the same position p on all three axes, so its rotary angles are plain RoPE's
at p. An image's tokens (its merged h x w patch grid, t frames) start at the running position s:

    time = s + frame, height = s + row, width = s + column

and the text after the image resumes at s + max(h, w), not at s + t*h*w: positions run behind token
indices by `delta` = (last position + 1) - prompt length, which every later (text) token keeps.
Each rotary frequency reads one axis: the first mrope_section[0] frequencies time, the next
height, the last width (the rules of transformers' `Qwen2_5_VLModel.get_rope_index`, images only).
Qwen3-VL interleaves them instead: frequency i reads height when i % 3 == 1 and i < 3 x section[1],
width when i % 3 == 2 and i < 3 x section[2], else time (`Qwen3VLTextRotaryEmbedding`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from tunelab.models.layers import Rotary


def mrope_positions(token_ids: Sequence[int], image_token_id: int, grids: Sequence[tuple[int, int, int]],
                    merge: int) -> tuple[list[list[int]], int]:
    """([time, height, width] positions of each prompt token, delta) for a prompt whose runs of
    `image_token_id` hold the images of `grids` (each (t, h, w) in patches, before merging), in order.

    ValueError when the runs do not hold exactly one image's token count per grid."""
    axes: list[list[int]] = [[], [], []]
    token_ids, grids = list(token_ids), list(grids)
    cur, i, n = 0, 0, len(token_ids)
    while i < n:
        if token_ids[i] != image_token_id:
            for axis in axes:
                axis.append(cur)
            cur, i = cur + 1, i + 1
            continue
        if not grids:
            raise ValueError(f"more image tokens than images (the run at token {i} has no image)")
        t, h, w = grids.pop(0)
        gh, gw = h // merge, w // merge
        count = t * gh * gw
        if token_ids[i:i + count] != [image_token_id] * count:
            raise ValueError(f"the image at token {i} needs {count} image tokens in a row")
        for f in range(t):
            for r in range(gh):
                axes[0].extend([cur + f] * gw)
                axes[1].extend([cur + r] * gw)
                axes[2].extend(cur + c for c in range(gw))
        cur, i = cur + max(gh, gw), i + count
    if grids:
        raise ValueError(f"{len(grids)} image(s) have no image tokens in the prompt")
    return axes, (max(max(a) for a in axes) + 1 - n) if n else 0


class MRotary(Rotary):
    """Rotary tables that also rotate by 3-axis positions, each frequency band reading its own axis."""

    def __init__(self, inv_freq: torch.Tensor, max_positions: int, sections: Sequence[int], scaling: float = 1.0,
                 interleaved: bool = False):
        super().__init__(inv_freq, max_positions, scaling)
        n = inv_freq.numel()
        if sum(sections) != n:
            raise ValueError(f"mrope_section {list(sections)} must sum to head_dim / 2 = {n}")
        if interleaved:
            axes = [1 if i % 3 == 1 and i < 3 * sections[1] else 2 if i % 3 == 2 and i < 3 * sections[2] else 0
                    for i in range(n)]
        else:
            axes = [k % 3 for k, size in enumerate(sections) for _ in range(size)]
        self.axis = torch.tensor(axes, device="cpu")  # (D/2,) the position axis each frequency reads
        self.freq = torch.arange(n, device="cpu")  # (cpu: the loader builds models on the meta device)

    def at3(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin (T, 1, D) for (3, T) positions, in `Rotary.at`'s layout."""
        rows = positions[self.axis.to(positions.device)].T  # (T, D/2): each frequency's own axis
        freq = self.freq.to(positions.device)
        cos, sin = self.cos[rows, freq], self.sin[rows, freq]  # (T, D/2)
        return torch.cat((cos, cos), -1).unsqueeze(1), torch.cat((-sin, sin), -1).unsqueeze(1)
