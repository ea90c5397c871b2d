"""The engine's Qwen2.5-VL against transformers' on the tiny random VLM: prefill (chunked through an
image), decode with M-RoPE's position offset, greedy output; and image content in the prefix-cache key."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tunelab.engine.config import SamplingParams
from tunelab.engine.kv_cache import KVCache
from tunelab.engine.runner import prepare_inputs
from tunelab.engine.scheduler import ScheduledItem
from tunelab.engine.sequence import Sequence
from tunelab.errors import InvalidRequest

BLOCK = 4
RED, BLUE = Image.new("RGB", (56, 28), (220, 30, 30)), Image.new("RGB", (56, 56), (30, 40, 220))
CASES = {"text": [], "one image": [RED], "two images": [RED, BLUE]}


def _prompt(tokenizer, images) -> list[int]:
    """Text around one <|vision_start|><|image_pad|>*k<|vision_end|> run per image (k from its grid)."""
    from tunelab.vision.preprocess import image_tokens, vision_grid

    start, pad, end = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    grid = vision_grid(tokenizer.name_or_path)
    ids = tokenizer.encode("look at")
    for im in images:
        ids += [start] + [pad] * image_tokens(im.height, im.width, grid) + [end] + tokenizer.encode(" and")
    return ids + tokenizer.encode(" name the colour")


@pytest.fixture(scope="module")
def hf(tiny_vlm):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm, dtype=torch.float32).eval()


def _reference(ref, ids: list[int], images, steps: int) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy tokens (full recompute each step) and its logits over prompt + all but the last."""
    from tunelab.vision.preprocess import image_processor, pixel_inputs

    pad = ref.config.image_token_id
    extra = pixel_inputs(images, image_processor(ref.name_or_path)) if images else {}
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            kinds = torch.tensor([[int(t == pad) for t in seq]]) if images else None
            logits = ref(input_ids=torch.tensor([seq]), mm_token_type_ids=kinds, **extra).logits[0]
            seq.append(int(logits[-1].argmax()))
    return seq[len(ids):], logits


def _engine_logits(model, kv, seq: Sequence, chunks: list[int]) -> torch.Tensor:
    """All-row logits of `seq` run in prefill chunks of the given sizes, then one token per step."""
    out, pos = [], 0
    sizes = chunks + [1] * (seq.num_tokens - sum(chunks))
    for n in sizes:
        step = prepare_inputs([ScheduledItem(seq, pos, n, True)], BLOCK, torch.device("cpu"))
        with torch.inference_mode():
            images = step.images.rows_for(model) if step.images else None
            out.append(model.compute_logits(model(step.input_ids, step.attn, kv.layers, images=images)))
        pos += n
    return torch.cat(out)


@pytest.mark.parametrize("case", list(CASES))
def test_prefill_and_decode_logits_match_transformers(tiny_vlm, hf, llm, case):
    from tunelab.engine.multimodal import build_image_inputs
    from tunelab.vision.preprocess import image_processor

    images = CASES[case]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, ref = _reference(hf, ids, images, steps=6)
    model = llm.engine.model  # the engine's weights, run here on a KV cache of our own
    kv = KVCache.allocate(model.spec, 32, BLOCK, torch.float32, torch.device("cpu"))
    seq = Sequence(ids + greedy[:-1])
    seq.block_table = list(range(3, 3 + -(-seq.num_tokens // BLOCK)))
    if images:
        seq.images = build_image_inputs(ids, images, image_processor(tiny_vlm), model)
    # the first chunk ends inside the first image's run: the second starts with image rows cached
    got = _engine_logits(model, kv, seq, [len(ids) - 9, 9 - 3, 3])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert got[len(ids) - 1:].argmax(-1).tolist() == greedy


@pytest.fixture(scope="module")
def llm(tiny_vlm):
    from tunelab.engine.llm import LLM

    return LLM(tiny_vlm, dtype="fp32", device="cpu", max_model_len=256, block_size=BLOCK, num_blocks=128)


@pytest.mark.parametrize("case", list(CASES))
def test_llm_greedy_matches_transformers(llm, hf, case):
    images = CASES[case]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, _ = _reference(hf, ids, images, steps=8)
    prompt = {"prompt_token_ids": ids, **({"multi_modal_data": {"image": images}} if images else {})}
    out = llm.generate(prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True), use_tqdm=False)
    assert out[0].outputs[0].token_ids == greedy


def test_vllm_style_prompt_with_one_pad_per_image(llm):
    """vLLM's text prompt holds one <|image_pad|> per image; the engine repeats it per image token."""
    ids = _prompt(llm.get_tokenizer(), [RED, BLUE])
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    text = "look at<|vision_start|><|image_pad|><|vision_end|> and<|vision_start|><|image_pad|><|vision_end|>" \
           " and name the colour"
    short = llm.generate({"prompt": text, "multi_modal_data": {"image": [RED, BLUE]}}, params, use_tqdm=False)
    full = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": [RED, BLUE]}}, params,
                        use_tqdm=False)
    assert short[0].prompt_token_ids == ids
    assert short[0].outputs[0].token_ids == full[0].outputs[0].token_ids
    with pytest.raises(InvalidRequest, match="more <\\|image_pad\\|> runs than the 1 image"):
        llm.generate({"prompt": text, "multi_modal_data": {"image": RED}}, params, use_tqdm=False)


def test_prefix_cache_keys_on_image_content(llm):
    other = Image.new("RGB", (56, 28), (30, 200, 40))  # RED's size: the same token ids
    prefix_cache_keys_on_image_content(llm, _prompt(llm.get_tokenizer(), [RED]), other)


def prefix_cache_keys_on_image_content(llm, ids: list[int], other: Image.Image) -> None:
    """Same token ids (`ids`, one RED image), another image: only the blocks before the image are shared,
    and the reply is the one a cold cache gives; the same image again shares the blocks past it."""
    first_image, block = ids.index(llm.engine.model.image_token_id), llm.engine.scheduler.block_manager.block_size
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=0)
    names = iter(range(100))

    def run(image):
        seqs = llm.engine.add_request(f"cache-{next(names)}", ids, params, images=[image])
        while llm.engine.has_unfinished():
            llm.engine.step()
        return seqs[0]

    llm.engine.scheduler.block_manager.reset_prefix_cache()
    cold = run(other)
    llm.engine.scheduler.block_manager.reset_prefix_cache()
    red = run(RED)
    swapped = run(other)
    assert swapped.num_cached_tokens == first_image // block * block  # nothing from the image's block on
    assert swapped.output_ids == cold.output_ids
    assert [lp.logprob for lp in swapped.logprobs] == pytest.approx([lp.logprob for lp in cold.logprobs], abs=1e-5)
    assert swapped.logprobs[0].logprob != pytest.approx(red.logprobs[0].logprob, abs=1e-3)  # the image tells
    again = run(RED)
    assert again.num_cached_tokens == (len(ids) - 1) // block * block
    assert again.output_ids == red.output_ids


def test_a_peft_adapter_on_the_vlm_matches_transformers_merged(tiny_vlm, llm, tmp_path):
    adapter_matches_merged(tiny_vlm, llm, tmp_path)


def adapter_matches_merged(model_dir, llm, tmp_path) -> None:
    """A PEFT LoRA on the language model (transformers 5 names it model.language_model...) served by
    the engine gives the greedy output of transformers' model with the adapter merged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(3)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    targets = r".*language_model.*\.(q_proj|v_proj|o_proj|gate_proj|down_proj)"
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    merged = peft_model.merge_and_unload().eval()
    ids = _prompt(llm.get_tokenizer(), [BLUE])
    greedy, _ = _reference(merged, ids, [BLUE], steps=6)
    llm.engine.add_adapter("vl-lora", tmp_path / "lora")
    out = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": BLUE}},
                       SamplingParams(max_tokens=6, temperature=0, ignore_eos=True), use_tqdm=False,
                       adapter="vl-lora")
    plain = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": BLUE}},
                         SamplingParams(max_tokens=6, temperature=0, ignore_eos=True), use_tqdm=False)
    assert out[0].outputs[0].token_ids == greedy
    assert plain[0].outputs[0].token_ids != greedy  # the adapter changed the reply
