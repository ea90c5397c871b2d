"""tunelab engine vs transformers on a random Qwen2.5-VL: prefill time per image and decode speed next to
text-only, in one process run.

    python bench/vlm_speed.py                 # CPU, fp32, 448x448 images (256 image tokens each)
    python bench/vlm_speed.py --side 224 --new-tokens 32

The model is random (no hub): text width 256, 4 layers; vision width 128, 4 blocks; the tiny test
tokenizer with Qwen's vision tokens. Rows:
(p) prefill of a prompt with 1 image, max_tokens=1, minus the same prompt's text-only prefill: the
    image's share (preprocessing, vision tower, its tokens through the decoder), in ms, both sides;
(d) decode tokens/s after an image prompt and after a text-only one (greedy, EOS ignored).
Baseline: transformers' Qwen2_5_VLForConditionalGeneration.generate on the same inputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from tunelab.engine import LLM, SamplingParams  # noqa: E402


def build(out: Path, side: int) -> Path:
    """A random Qwen2.5-VL of bench size with an image processor whose budget fits a side x side image."""
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from tiny_models import TOKENIZER_DIR, VOCAB
    from tiny_vlm import VISION_TOKENS
    from tunelab.vision.preprocess import VisionGrid, image_processor

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    start, pad, end = tok.convert_tokens_to_ids(VISION_TOKENS)
    text = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                  fullatt_block_indexes=[3], window_size=112, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=pad, vision_start_token_id=start,
                              vision_end_token_id=end, video_token_id=pad, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    image_processor(grid=VisionGrid(min_pixels=28 * 28, max_pixels=side * side)).save_pretrained(out)
    return out


def prompts(model_dir: Path, side: int):
    """(ids with one image, the image, text-only ids of the same length)."""
    from PIL import Image
    from transformers import AutoTokenizer

    from tunelab.vision.preprocess import image_tokens, vision_grid

    tok = AutoTokenizer.from_pretrained(model_dir)
    start, pad, end = tok.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    image = Image.effect_noise((side, side), 64).convert("RGB")
    n = image_tokens(side, side, vision_grid(model_dir))
    head, tail = tok.encode("describe the picture:"), tok.encode(" in one line please")
    with_image = head + [start] + [pad] * n + [end] + tail
    text_only = (head + tail * (len(with_image) // len(tail) + 1))[:len(with_image)]
    return with_image, image, text_only


def ours(model_dir: Path, ids, image, text_ids, new_tokens: int) -> dict[str, float]:
    llm = LLM(model_dir, dtype="fp32", max_model_len=4096, enable_prefix_caching=False)

    def run(prompt, n):
        start = time.perf_counter()
        llm.generate(prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True), use_tqdm=False)
        return time.perf_counter() - start

    img = {"prompt_token_ids": ids, "multi_modal_data": {"image": image}}
    run(img, 4), run({"prompt_token_ids": text_ids}, 4)  # warm-up
    return _figures(lambda n: run(img, n), lambda n: run({"prompt_token_ids": text_ids}, n), new_tokens)


def reference(model_dir: Path, ids, image, text_ids, new_tokens: int) -> dict[str, float]:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tunelab.vision.preprocess import image_processor, pixel_inputs

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = image_processor(model_dir)
    kinds = torch.tensor([[int(t == model.config.image_token_id) for t in ids]])

    def run(inputs, n):
        start = time.perf_counter()
        pixels = pixel_inputs([image], processor) if "mm_token_type_ids" in inputs else {}  # timed, as ours
        with torch.no_grad():
            model.generate(**inputs, **pixels, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    img = {"input_ids": torch.tensor([ids]), "mm_token_type_ids": kinds}
    txt = {"input_ids": torch.tensor([text_ids])}
    run(img, 4), run(txt, 4)  # warm-up
    return _figures(lambda n: run(img, n), lambda n: run(txt, n), new_tokens)


def _figures(image_run, text_run, new_tokens: int) -> dict[str, float]:
    """Image prefill share (ms, best of 3) and decode tok/s after each prompt kind."""
    first_img = min(image_run(1) for _ in range(3))
    first_txt = min(text_run(1) for _ in range(3))
    decode_img = (new_tokens - 1) / (image_run(new_tokens) - first_img)
    decode_txt = (new_tokens - 1) / (text_run(new_tokens) - first_txt)
    return {"image prefill ms": 1e3 * (first_img - first_txt), "text prefill ms": 1e3 * first_txt,
            "decode tok/s (image prompt)": decode_img, "decode tok/s (text prompt)": decode_txt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=448, help="image side in pixels (a multiple of 28)")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp) / "vlm", args.side)
        ids, image, text_ids = prompts(model_dir, args.side)
        pad = ids[ids.index(ids[len(ids) // 2])]  # the middle of the prompt is the image's run
        print(f"prompt: {len(ids)} tokens, {ids.count(pad)} of them the image's; threads: {torch.get_num_threads()}")
        a = ours(model_dir, ids, image, text_ids, args.new_tokens)
        b = reference(model_dir, ids, image, text_ids, args.new_tokens)
    for key in a:
        print(f"{key:30s} tunelab {a[key]:9.2f}  transformers {b[key]:9.2f}  ratio {a[key] / b[key]:.2f}")


if __name__ == "__main__":
    main()
