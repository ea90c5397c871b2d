"""tunelab engine vs transformers on a random Gemma 3 VLM: prefill time per image and decode speed next to
text-only, in one process run (the Gemma 3 counterpart of bench/vlm_speed.py, whose timing it reuses).

    python bench/vlm_speed_gemma3.py                  # CPU, fp32, 448-px tower, 256 image tokens (Gemma 3's count)
    python bench/vlm_speed_gemma3.py --new-tokens 32

The model is random (no hub): text width 256, 4 layers (sliding window 512); SigLIP width 128, 4 blocks over
448-px images (32x32 patches of 14 px, pooled 2x2 into 256 tokens); the tiny test tokenizer with Gemma's
image tokens. Rows as in vlm_speed.py: (p) the image's prefill share in ms; (d) decode tokens/s after an
image prompt and after a text-only one. Baseline: transformers' Gemma3ForConditionalGeneration.generate with
the processor's token_type_ids (its image tokens attend both ways, as in ours).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from vlm_speed import _figures, ours  # noqa: E402

SIDE, TOKENS = 448, 256


def build(out: Path) -> Path:
    """A random Gemma 3 VLM of bench size, its tokenizer and a 448-px image processor."""
    from transformers import AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil

    from tiny_models import TOKENIZER_DIR, VOCAB
    from tiny_vlm import GEMMA3_IMAGE_TOKENS, GEMMA3_TURN_TOKENS

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.add_special_tokens({"additional_special_tokens": GEMMA3_IMAGE_TOKENS + GEMMA3_TURN_TOKENS})
    boi, soft, eoi = tok.convert_tokens_to_ids(GEMMA3_IMAGE_TOKENS)
    text = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, query_pre_attn_scalar=64, sliding_window=512,
                max_position_embeddings=4096, rms_norm_eps=1e-6, bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"])
    vision = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  image_size=SIDE, patch_size=14, vision_use_head=False)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=TOKENS, boi_token_id=boi,
                          eoi_token_id=eoi, image_token_id=soft, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).to(torch.float32)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.02)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    Gemma3ImageProcessorPil(size={"height": SIDE, "width": SIDE}).save_pretrained(out)
    return out


def prompts(model_dir: Path):
    """(ids with one image, the image, text-only ids of the same length)."""
    from PIL import Image
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    boi, soft, eoi = tok.convert_tokens_to_ids(["<start_of_image>", "<image_soft_token>", "<end_of_image>"])
    image = Image.effect_noise((SIDE, SIDE), 64).convert("RGB")
    head, tail = tok.encode("describe the picture:"), tok.encode(" in one line please")
    with_image = head + [boi] + [soft] * TOKENS + [eoi] + tail
    text_only = (head + tail * (len(with_image) // len(tail) + 1))[:len(with_image)]
    return with_image, image, text_only


def reference(model_dir: Path, ids, image, text_ids, new_tokens: int) -> dict[str, float]:
    from transformers import Gemma3ForConditionalGeneration

    from tunelab.vision.preprocess import image_processor, pixel_inputs

    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = image_processor(model_dir)
    kinds = torch.tensor([[int(t == model.config.image_token_id) for t in ids]])

    def run(inputs, n):
        start = time.perf_counter()
        pixels = pixel_inputs([image], processor) if "token_type_ids" in inputs else {}  # timed, as ours
        with torch.no_grad():
            model.generate(**inputs, **pixels, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    img = {"input_ids": torch.tensor([ids]), "token_type_ids": kinds}
    txt = {"input_ids": torch.tensor([text_ids])}
    run(img, 4), run(txt, 4)  # warm-up
    return _figures(lambda n: run(img, n), lambda n: run(txt, n), new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp) / "gemma3-vlm")
        ids, image, text_ids = prompts(model_dir)
        print(f"prompt: {len(ids)} tokens, {TOKENS} of them the image's; threads: {torch.get_num_threads()}")
        a = ours(model_dir, ids, image, text_ids, args.new_tokens)
        b = reference(model_dir, ids, image, text_ids, args.new_tokens)
    for key in a:
        print(f"{key:30s} tunelab {a[key]:9.2f}  transformers {b[key]:9.2f}  ratio {a[key] / b[key]:.2f}")


if __name__ == "__main__":
    main()
