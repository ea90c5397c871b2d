"""Training a vision-language model (Qwen2-VL family, Gemma 3): load it, pick what trains, feed it pixels.

- The language model gets LoRA (or trains in full); the vision tower stays frozen unless
  `freeze_vision_tower=false`, and the projector (Qwen's `visual.merger`, Gemma 3's
  `multi_modal_projector`) trains only with `train_projector` (vision/family's `ImageFormat` names them).
- Qwen batches carry `pixel_values` + `image_grid_thw` + `mm_token_type_ids` and no position ids: the
  model computes its own M-RoPE positions (3 axes: time, height, width) from the image grid. Gemma 3
  batches carry `pixel_values` + `token_type_ids`, which give an image's tokens bidirectional attention.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from tunelab.vision.family import TRAINABLE, ImageFormat, format_of, image_format, model_type


def load_vision_model(model_dir: Path, **kwargs: Any) -> nn.Module:
    """The image-text-to-text model of a supported family; a clear error for the others."""
    from transformers import AutoModelForImageTextToText

    from tunelab.errors import TunelabError

    kind = model_type(model_dir)
    if kind not in TRAINABLE:
        raise TunelabError(f"model: {model_dir} is a {kind} vision-language model; tunelab trains vision models "
                           f"of the {', '.join(TRAINABLE)} families only so far")
    return AutoModelForImageTextToText.from_pretrained(str(model_dir), **kwargs)


def lora_targets(model: nn.Module, freeze_vision_tower: bool) -> str:
    """A peft regex of the linear layers LoRA adapts: the language model's (and the tower's when it trains);
    never the projector (train_projector trains it whole) nor the output head."""
    fmt = model_format(model)
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)
                    and fmt.projector not in n and "lm_head" not in n})
    # the projector's own layers can share a name with the tower's (Qwen3-VL: linear_fc1/2): exclude it by path
    scope = rf"^(?!.*\b{fmt.projector}\.).*" if not freeze_vision_tower else rf"^(?!.*\b{fmt.tower}\b).*"
    return rf"{scope}\.({'|'.join(names)})$"


def model_format(model: nn.Module) -> ImageFormat:
    """The `ImageFormat` (tower and projector names) of a loaded transformers VLM."""
    return format_of(getattr(model.config, "model_type", None))


def set_vision_trainable(model: nn.Module, freeze_vision_tower: bool, train_projector: bool) -> None:
    """requires_grad for the tower and projector (full/freeze methods; LoRA uses `lora_targets`)."""
    fmt = model_format(model)
    for name, param in model.named_parameters():
        if f".{fmt.projector}." in f".{name}":  # Qwen's projector sits inside its tower: test it first
            param.requires_grad = train_projector
        elif f".{fmt.tower}." in f".{name}":
            param.requires_grad = not freeze_vision_tower


@functools.lru_cache(maxsize=4)
def _processor(model_dir: str) -> Any:
    from tunelab.vision.preprocess import image_processor

    return image_processor(model_dir)


def vision_batch(refs: Sequence[str], model_dir: str, input_ids: Any = None) -> dict:
    """pixel_values (and Qwen's image_grid_thw) of a micro-batch's images, in order; with `input_ids` (B, T)
    also which tokens are image tokens (1): Qwen's mm_token_type_ids, without which transformers 5 gives
    image tokens plain 1-D positions instead of M-RoPE's; Gemma 3's token_type_ids, without which its
    image tokens attend causally instead of both ways (what the processor and our engine use)."""
    from tunelab.vision.images import load_rgb
    from tunelab.vision.preprocess import pixel_inputs

    out = pixel_inputs([load_rgb(ref) for ref in refs], _processor(model_dir))
    if input_ids is not None:
        key = "token_type_ids" if image_format(model_dir).bidirectional else "mm_token_type_ids"
        out[key] = (input_ids == _image_token_id(model_dir)).int()
    return out


@functools.lru_cache(maxsize=4)
def _image_token_id(model_dir: str) -> int:
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return int(config.get("image_token_id", config.get("image_token_index")))  # Gemma 3 saves the latter
