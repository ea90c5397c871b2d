"""A tiny random Qwen2.5-VL (2 text layers, width 64; 2 vision blocks, width 32) with the tiny tokenizer.

The tokenizer gets Qwen's three vision tokens, and the folder a Qwen2-VL image processor config
with a small pixel budget, so a test image is a handful of tokens.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import TOKENIZER_DIR, VOCAB

VISION_TOKENS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
MAX_PIXELS = 56 * 56  # at most 4 image tokens per image


def tiny_vlm_config(tokenizer):
    """A transformers Qwen2_5_VLConfig whose special ids come from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    start, pad, end = tokenizer.convert_tokens_to_ids(VISION_TOKENS)
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)  # wide enough logits to learn fast
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  fullatt_block_indexes=[1], window_size=56, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=pad, vision_start_token_id=start,
                            vision_end_token_id=end, video_token_id=pad, tie_word_embeddings=True)


def build_tiny_vlm(out: Path, seed: int = 0) -> Path:
    """Save a random tiny Qwen2.5-VL, its tokenizer and image processor config to `out`."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from tunelab.vision.preprocess import VisionGrid, image_processor

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_vlm_config(tokenizer)).to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor(grid=VisionGrid(min_pixels=28 * 28, max_pixels=MAX_PIXELS)).save_pretrained(out)
    return out


def llamacpp_ready(src: Path, out: Path) -> Path:
    """A copy of the tiny VLM in `src` with what llama.cpp's clip graph hard-codes: a 112-pixel attention
    window (the tiny default is 56), and a pixel budget of 8-16 merged tokens (llama.cpp's minimum is 8),
    so a 112x84 image is 12 tokens unresized on both sides. Its vision weights are redrawn at std 0.2:
    at the default 0.02 every block is nearly the identity, and a mis-mapped tensor would go unnoticed."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    weights = load_file(str(out / "model.safetensors"))
    generator = torch.Generator().manual_seed(1)
    for name, w in weights.items():
        if name.startswith(("visual.", "model.visual.")):
            noise = torch.randn(w.shape, generator=generator, dtype=w.dtype) * 0.2
            weights[name] = noise + 1.0 if name.endswith(("norm1.weight", "norm2.weight", "ln_q.weight")) else noise
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, edit in (("config.json", lambda c: c["vision_config"].update(window_size=112)),
                       ("preprocessor_config.json", lambda c: c.update(size={"shortest_edge": 8 * 784,
                                                                              "longest_edge": 16 * 784}))):
        config = json.loads((out / name).read_text(encoding="utf-8"))
        edit(config)
        (out / name).write_text(json.dumps(config, indent=1), encoding="utf-8")
    return out


GEMMA3_IMAGE_TOKENS = ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]
GEMMA3_TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA3_IMAGE_SIZE = 32  # 8x8 SigLIP patches of 4 px, pooled 2x2 into 16 image tokens


def tiny_gemma3_vlm_config(tokenizer):
    """A transformers Gemma3Config: the tiny Gemma 3 text model (tiny_models) and a 2-block SigLIP of width 32
    over 32-px images, 16 tokens per image (more than the sliding window of 8, so the window and the
    bidirectional image attention meet)."""
    from transformers import Gemma3Config

    from tiny_models import tiny_config

    boi, soft, eoi = tokenizer.convert_tokens_to_ids(GEMMA3_IMAGE_TOKENS)
    text = tiny_config("gemma3").to_dict()
    text.update(initializer_range=0.2)  # wide enough logits to learn fast
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=GEMMA3_IMAGE_SIZE, patch_size=4, vision_use_head=False, layer_norm_eps=1e-6)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=16, boi_token_id=boi,
                        eoi_token_id=eoi, image_token_id=soft, initializer_range=0.2, tie_word_embeddings=True)


def build_tiny_gemma3_vlm(out: Path, seed: int = 0) -> Path:
    """Save a random tiny Gemma3ForConditionalGeneration, its tokenizer (Gemma's turn and image tokens, the
    gemma chat template) and a Gemma 3 image processor config (32 x 32 px) to `out`."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil

    from tunelab.data.builtin_templates import BUILTINS

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_special_tokens({"additional_special_tokens": GEMMA3_IMAGE_TOKENS + GEMMA3_TURN_TOKENS})
    tokenizer.chat_template = BUILTINS["gemma"][0]
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(tiny_gemma3_vlm_config(tokenizer)).to(torch.float32)
    with torch.no_grad():  # the projector starts at zeros in transformers: draw it, or images would not tell
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    side = {"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE}
    Gemma3ImageProcessorPil(size=side).save_pretrained(out)
    return out


def tiny_qwen3_vl_config(tokenizer, deepstack=(0, 1)):
    """A transformers Qwen3VLConfig: Qwen3's decoder (q/k norms) at width 64, interleaved M-RoPE, and a 2-block
    tower of width 32 over 16-px patches whose `deepstack` blocks feed DeepStack (by default both, added after
    decoder layers 0 and 1)."""
    from transformers import Qwen3VLConfig

    start, pad, end = tokenizer.convert_tokens_to_ids(VISION_TOKENS)
    text = tiny_vlm_config(tokenizer).text_config.to_dict()
    text = {k: text[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                 "rms_norm_eps", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range")}
    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                  deepstack_visual_indexes=list(deepstack), initializer_range=0.2)  # 0.02: every block ~identity
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=pad, vision_start_token_id=start,
                         vision_end_token_id=end, video_token_id=pad, tie_word_embeddings=True)


def build_tiny_qwen3_vl(out: Path, seed: int = 0, deepstack=(0, 1), pixels=(32 * 32, 64 * 64)) -> Path:
    """Save a random tiny Qwen3-VL, its tokenizer and a Qwen2-VL image processor config as Qwen3-VL's
    (16-px patches, mean/std 0.5; by default 32x32 to 64x64 px: 1-4 image tokens) to `out`."""
    import torch
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen3VLForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_qwen3_vl_config(tokenizer, deepstack)).to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                             image_std=[0.5] * 3, size={"shortest_edge": pixels[0], "longest_edge": pixels[1]}
                             ).save_pretrained(out)
    return out
