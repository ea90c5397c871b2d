"""Qwen3-VL in the engine: `Qwen2_5_VLForCausalLM` (models/qwen_vl.py) with what Qwen3-VL changes.

- the decoder is Qwen3's (q/k RMSNorm per head: registry's `qwen3_spec`);
- M-RoPE frequencies interleave time, height and width (models/mrope.py, `interleaved`);
- the tower is transformers' `Qwen3VLVisionModel` (16-px patches, learned position grid, its own
  merger) and returns DeepStack features: one more (tokens, hidden) set per `deepstack_visual_indexes`
  block, which the decoder adds to the image tokens after its first layers. `encode_images` returns
  them beside the merged rows, one wide row per image token, so the engine keeps, slices and batches
  them as it does Qwen2.5-VL's.

Image tokens, their positions (`mrope_positions`) and the processor (Qwen2-VL's, patch 16) are Qwen2.5-VL's.
"""

from __future__ import annotations

import torch

from tunelab.models.qwen_vl import Qwen2_5_VLForCausalLM


class Qwen3VLForCausalLM(Qwen2_5_VLForCausalLM):
    """Qwen3-VL (dense): Qwen3's decoder, interleaved M-RoPE, DeepStack image features."""

    interleaved_mrope = True

    @staticmethod
    def tower(vision_config) -> torch.nn.Module:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

        return Qwen3VLVisionModel._from_config(vision_config)

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values (patches, C*T*P*P), grid_thw (images, 3) -> (tokens, hidden * (1 + DeepStack
        levels)): each image token's merged row, then its DeepStack rows in layer order."""
        dev = self.model.embed_tokens.weight.device
        dtype = self.visual.patch_embed.proj.weight.dtype
        out = self.visual(pixel_values.to(dev, dtype), grid_thw=grid_thw.to(dev))
        return torch.cat([out.pooler_output, *out.deepstack_features], -1)
