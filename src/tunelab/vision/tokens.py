"""`<image>` markers -> the model's image tokens, before the chat template renders a row.

Qwen2-VL reads an image as `<|vision_start|>` + one `<|image_pad|>` per merged patch + `<|vision_end|>`;
Gemma 3 as `\\n\\n<start_of_image>` + 256 `<image_soft_token>` + `<end_of_image>\\n\\n` (vision/family's
`ImageFormat`). The pads are where the vision tower's embeddings go. Expanding the marker in the
message text (not in token ids) keeps the prompt/reply split of data/tokenize.py unchanged.
"""

from __future__ import annotations

from typing import Any

from tunelab.vision.family import ImageFormat, image_format
from tunelab.vision.preprocess import VisionGrid, ref_tokens, vision_grid


def image_token_id(tokenizer: Any) -> int | None:
    """The id of the model's image pad token (`<|image_pad|>`, a Gemma 3 VLM's `<image_soft_token>`) in
    the tokenizer's vocabulary; None for a text-only tokenizer (a Gemma 3 text model's has no `<|image_pad|>`)."""
    return tokenizer.get_vocab().get(image_format(getattr(tokenizer, "name_or_path", None)).pad)


def expand_markers(messages: list[dict], images: list[str], grid: VisionGrid) -> list[dict]:
    """Copies of `messages` with the i-th `<image>` marker replaced by image i's token run; for Gemma 3 by
    its bare `<start_of_image>`, as its chat template writes an image, which `data.templates.encode_text`
    grows into the run after rendering (as Gemma3Processor does)."""
    from tunelab.vision.images import IMAGE_MARKER  # here: vision.images loads tunelab.data, which loads it
    fmt = grid.format
    runs = iter([fmt.start or fmt.before + fmt.pad * ref_tokens(ref, grid) + fmt.after for ref in images])
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and IMAGE_MARKER in content:
            pieces = content.split(IMAGE_MARKER)
            content = pieces[0] + "".join(next(runs) + piece for piece in pieces[1:])
            message = {**message, "content": content}
        out.append(message)
    return out


def expand_image_starts(text: str, grid: VisionGrid) -> str:
    """A text prompt read as Gemma3Processor reads it: each bare `<start_of_image>` (what Gemma 3's chat
    template and vLLM's Gemma 3 prompts write) grows into the image's whole run. Unchanged when the family
    has no such token or the prompt already holds pad tokens."""
    fmt = grid.format
    if not fmt.start or not grid.fixed_tokens or fmt.pad in text:
        return text
    return text.replace(fmt.start, fmt.before + fmt.pad * grid.fixed_tokens + fmt.after)


def grid_for(tokenizer: Any) -> VisionGrid:
    """How the model the tokenizer was loaded from sizes images."""
    return vision_grid(getattr(tokenizer, "name_or_path", None))


def expand_image_pads(ids: list[int], pad_id: int, counts: list[int], fmt: ImageFormat | None = None) -> list[int]:
    """`ids` with the i-th run of `pad_id` tokens made `counts[i]` long (vLLM's prompts carry one
    pad per image; the model needs one per image token). ValueError when the runs and the images
    differ in number."""
    from tunelab.vision.family import QWEN2_VL

    fmt = fmt or QWEN2_VL
    out: list[int] = []
    runs = 0
    for i, token in enumerate(ids):
        if token != pad_id:
            out.append(token)
        elif i == 0 or ids[i - 1] != pad_id:
            if runs == len(counts):
                raise ValueError(f"the prompt has more {fmt.pad} runs than the {len(counts)} image(s) given")
            out.extend([pad_id] * counts[runs])
            runs += 1
    if runs != len(counts):
        raise ValueError(f"{len(counts)} image(s) but {runs} {fmt.pad} run(s) in the prompt; put "
                         f"{fmt.placeholder.strip()} where each image goes")
    return out
