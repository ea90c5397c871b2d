"""Qwen2.5-VL in the engine: Qwen2's decoder with M-RoPE (models/mrope.py) plus a vision tower.

    pixels -> visual (transformers' own module: patch embed, ViT blocks, 2x2 merger) -> (N, hidden)
    prompt ids -> embed -> rows of <|image_pad|> replaced by the N image rows -> decoder -> norm

The tower runs once per image at prefill (engine/multimodal.py keeps its output on the sequence);
the decoder is ours, over the paged KV cache. A step without image rows is plain Qwen2: text tokens
have equal positions on all three M-RoPE axes, and `AttnBatch.positions` already carries each
token's rotary position (its index shifted by the prompt's M-RoPE delta).

Qwen3-VL (models/qwen3_vl.py) is this class with Qwen3's decoder, interleaved M-RoPE, its own tower and
DeepStack: an image row carries k more feature sets from the tower's middle blocks, added to the
image tokens' hidden states after decoder layers 0..k-1 (the row is hidden * (1 + k) wide).
"""

from __future__ import annotations

import torch

from tunelab.models.attention import AttnBatch
from tunelab.models.llama import CausalLM, KVCaches
from tunelab.models.mrope import MRotary
from tunelab.models.spec import ModelSpec


class Qwen2_5_VLForCausalLM(CausalLM):
    """Qwen2.5-VL: `CausalLM` on the text config, transformers' vision tower as `visual`."""

    interleaved_mrope = False  # Qwen3-VL's frequency layout (models/mrope.py)

    def __init__(self, spec: ModelSpec, config):
        text = config.text_config
        spec.tie_embeddings = bool(getattr(config, "tie_word_embeddings", False))  # the outer config holds it
        super().__init__(spec, text)
        (layer_type,) = self.rotary  # Qwen2.5-VL has full attention everywhere: one rotary table
        sections = (text.rope_parameters or {}).get("mrope_section", [16, 24, 24])
        self.rotary = {layer_type: _mrotary(text, spec, sections, self.interleaved_mrope)}
        self.visual = self.tower(config.vision_config)
        self.image_token_id = int(config.image_token_id)
        self.merge_size = int(config.vision_config.spatial_merge_size)

    @staticmethod
    def tower(vision_config) -> torch.nn.Module:
        """transformers' vision tower of the family, built empty (the loader fills its weights)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        return Qwen2_5_VisionTransformerPretrainedModel._from_config(vision_config)

    def to_device(self, device: torch.device) -> "Qwen2_5_VLForCausalLM":
        """Move weights and tables; rebuild the tower's rotary buffers, which the loader's
        meta-device build leaves empty (they are not in the checkpoint)."""
        super().to_device(device)
        rot = self.visual.rotary_pos_emb
        inv_freq, _ = rot.compute_axial_rope_parameters(rot.config)
        rot.inv_freq, rot.original_inv_freq = inv_freq.to(device), inv_freq.clone().to(device)
        return self

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values (patches, C*T*P*P), grid_thw (images, 3) -> image rows (tokens, hidden), images in order."""
        dev = self.model.embed_tokens.weight.device
        dtype = self.visual.patch_embed.proj.weight.dtype
        out = self.visual(pixel_values.to(dev, dtype), grid_thw=grid_thw.to(dev))
        return out.pooler_output

    def forward(self, input_ids: torch.Tensor, batch: AttnBatch, caches: KVCaches, images=None) -> torch.Tensor:
        """input_ids: (T,) -> hidden (T, hidden); `images` (engine.multimodal.ImageRows) places image
        rows and gives every row's (3, T) M-RoPE position."""
        if images is None:
            return super().forward(input_ids, batch, caches)
        x = self.model.embed_tokens(input_ids)  # (T, hidden)
        width, embeds = x.shape[-1], images.embeds.to(x.dtype)  # embeds: (N, width * (1 + DeepStack levels))
        x = x.index_copy(0, images.rows, embeds[:, :width])
        (rot,) = self.rotary.values()
        rope = rot.at3(images.positions)
        for i, (layer, cache) in enumerate(zip(self.model.layers, caches)):
            x = layer(x, batch, cache, rope)
            if (i + 2) * width <= embeds.shape[1]:  # DeepStack: layer i's share of the tower's features
                x = x.index_add(0, images.rows, embeds[:, (i + 1) * width:(i + 2) * width])
        return self.model.norm(x)


def _mrotary(text, spec: ModelSpec, sections, interleaved: bool) -> MRotary:
    from tunelab.models.layers import rope_inv_freq

    inv_freq, scaling = rope_inv_freq(text, spec.head_dim)
    return MRotary(inv_freq, spec.max_positions, sections, scaling, interleaved)
