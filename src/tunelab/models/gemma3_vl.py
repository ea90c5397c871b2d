"""Gemma 3 with images (Gemma3ForConditionalGeneration): the Gemma 3 text model plus a SigLIP tower.

    pixels (n, 3, S, S) -> vision_tower (transformers' SigLIP) -> (n, patches, vision width)
        -> multi_modal_projector (avg-pool to mm_tokens_per_image, RMSNorm, matmul) -> (n * tokens, hidden)
    prompt ids -> embed * sqrt(hidden) -> rows of <image_soft_token> replaced by the image rows -> decoder

The image rows are not scaled by sqrt(hidden) (transformers scales the token embeddings, then scatters
the projector's rows in). Positions are plain 1-D. At prefill an image's tokens attend to each other
both ways (`multimodal.ImageInputs.bidirectional` -> `PrefillSegment.blocks`); a step without image
rows is plain Gemma 3.
"""

from __future__ import annotations

import torch

from tunelab.models.attention import AttnBatch
from tunelab.models.gemma3 import Gemma3ForCausalLM
from tunelab.models.llama import KVCaches
from tunelab.models.spec import ModelSpec


class Gemma3VLForCausalLM(Gemma3ForCausalLM):
    """Gemma 3 with images: `Gemma3ForCausalLM` on the text config, transformers' SigLIP tower and projector."""

    image_bidirectional = True  # transformers' token_type_ids mask: an image's tokens see each other at prefill

    def __init__(self, spec: ModelSpec, config):
        from transformers import AutoModel
        from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector

        spec.tie_embeddings = bool(getattr(config, "tie_word_embeddings", True))  # the outer config holds it
        super().__init__(spec, config.text_config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = Gemma3MultiModalProjector(config)
        self.image_token_id = int(config.image_token_id)
        self.tokens_per_image = int(config.mm_tokens_per_image)

    def to_device(self, device: torch.device) -> "Gemma3VLForCausalLM":
        """Move weights and tables; refill the tower's patch position ids, which the loader's meta-device
        build leaves empty (a buffer, not in the checkpoint)."""
        super().to_device(device)
        emb = self.vision_tower.embeddings
        emb.position_ids = torch.arange(emb.num_positions, device=device).expand((1, -1))
        return self

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values (images, 3, S, S) -> image rows (images * tokens_per_image, hidden), images in order."""
        dev = self.model.embed_tokens.weight.device
        dtype = self.multi_modal_projector.mm_input_projection_weight.dtype
        patches = self.vision_tower(pixel_values=pixel_values.to(dev, dtype)).last_hidden_state  # (n, P, width)
        return self.multi_modal_projector(patches).flatten(0, 1)

    def forward(self, input_ids: torch.Tensor, batch: AttnBatch, caches: KVCaches, images=None) -> torch.Tensor:
        """input_ids: (T,) -> hidden (T, hidden); `images` (engine.multimodal.ImageRows) places image rows."""
        x = self.embed(input_ids)  # (T, hidden), scaled by sqrt(hidden); the image rows are not
        if images is not None:
            x = x.index_copy(0, images.rows, images.embeds.to(x.dtype))
        return self.decode(x, batch, caches)
