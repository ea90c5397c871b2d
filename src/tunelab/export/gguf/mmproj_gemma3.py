"""Gemma 3's mmproj file (`clip.projector_type` gemma3): the SigLIP tower and Gemma 3's projector.

llama.cpp's clip graph for it: SigLIP blocks (gelu, layer norm), then the projector's average pool
(to `clip.vision.projector.scale_factor` patches a side, 4 unless written), RMSNorm and matmul.
Tensor names come from gguf's own table (`TensorNameMap`, MODEL_ARCH.MMPROJ) for the hub's names
(`vision_tower.vision_model.*`); as llama.cpp's converter does, the projector's RMSNorm gain is stored
as 1 + w (Gemma3RMSNorm scales by 1 + w, the clip graph by w) and `mm_input_projection_weight` keeps
its (vision width, text width) layout, which the graph transposes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunelab.export.errors import ExportError

PROJECTOR_TYPE = "gemma3"
LLAMA_CPP_POOL = 4  # the clip graph's default pool side when the file writes no scale factor
# checkpoint prefixes (the hub's, transformers 5's) -> the hub's, which gguf's table knows
_RENAMES = (("model.vision_tower.vision_model.", "vision_tower.vision_model."),
            ("model.vision_tower.", "vision_tower.vision_model."),
            ("vision_tower.vision_model.", "vision_tower.vision_model."),
            ("vision_tower.", "vision_tower.vision_model."),
            ("model.multi_modal_projector.", "multi_modal_projector."),
            ("multi_modal_projector.", "multi_modal_projector."))


def gemma3_keys(where: Path, config: dict, image_seq_length: int | None = None) -> dict:
    """The clip keys of a Gemma 3 VLM's config.json; ExportError when llama.cpp's graph cannot run it."""
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    tokens = int(config.get("mm_tokens_per_image", image_seq_length or 256))
    side, per_side = int(vision["image_size"]) // int(vision["patch_size"]), int(round(tokens ** 0.5))
    if per_side * per_side != tokens or side % per_side:
        raise ExportError(f"{where}: mm_tokens_per_image {tokens} does not pool the {side}x{side} patch grid "
                          "evenly, which llama.cpp's gemma3 clip graph needs; nothing was written")
    keys = {"projector_type": PROJECTOR_TYPE, "projection_dim": int(text["hidden_size"]),
            "image_size": int(vision["image_size"]), "patch_size": int(vision["patch_size"]),
            "embedding_length": int(vision["hidden_size"]), "feed_forward_length": int(vision["intermediate_size"]),
            "block_count": int(vision["num_hidden_layers"]), "head_count": int(vision["num_attention_heads"]),
            "eps": float(vision.get("layer_norm_eps", 1e-6)), "use_gelu": True}
    if side // per_side != LLAMA_CPP_POOL:
        keys["scale_factor"] = side // per_side
    return keys


def hub_name(name: str) -> str | None:
    """A checkpoint tensor's hub name (`vision_tower.vision_model.*`, `multi_modal_projector.*`), or None
    for the language model's."""
    for old, new in _RENAMES:
        if name.startswith(old):
            return new + name[len(old):].replace("mm_input_projection_weight", "mm_input_projection.weight")
    return None


def gguf_name(hub: str, blocks: int) -> str | None:
    """llama.cpp's name for a hub vision tensor (gguf's table); None for tensors the clip graph skips
    (SigLIP's pooling head)."""
    import gguf

    if ".head." in hub:
        return None
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, blocks)
    return table.get_name(hub, try_suffixes=(".weight", ".bias"))


def gemma3_array(hub: str, data: np.ndarray) -> np.ndarray:
    """The stored value: the projector's RMSNorm gain as 1 + w (llama.cpp's converter does the same)."""
    return data + 1.0 if hub.endswith("mm_soft_emb_norm.weight") else data
