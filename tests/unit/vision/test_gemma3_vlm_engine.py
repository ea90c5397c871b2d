"""The engine's Gemma 3 VLM against transformers' Gemma3ForConditionalGeneration on the tiny random one:
prefill (image tokens attending to each other both ways, also under the sliding window), decode, greedy
output with prefill chunks that must not cut an image, image content in the prefix-cache key, a LoRA."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_vlm_engine import _engine_logits, prefix_cache_keys_on_image_content

from tunelab.engine.config import SamplingParams
from tunelab.engine.kv_cache import KVCache
from tunelab.engine.sequence import Sequence
from tunelab.errors import InvalidRequest

BLOCK = 4
RED, BLUE = Image.new("RGB", (40, 20), (220, 30, 30)), Image.new("RGB", (32, 32), (30, 40, 220))
CASES = {"text": [], "one image": [RED], "two images": [RED, BLUE]}


def _prompt(tokenizer, images, per_image: int = 16) -> list[int]:
    """Text around one <start_of_image><image_soft_token>*16<end_of_image> run per image."""
    boi, soft, eoi = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<image_soft_token>", "<end_of_image>"])
    ids = tokenizer.encode("look at")
    for _ in images:
        ids += [boi] + [soft] * per_image + [eoi] + tokenizer.encode(" and")
    return ids + tokenizer.encode(" name the colour")


@pytest.fixture(scope="module")
def hf(tiny_gemma3_vlm):
    from transformers import Gemma3ForConditionalGeneration

    return Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma3_vlm, dtype=torch.float32).eval()


def _reference(ref, ids: list[int], images, steps: int) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy tokens (full recompute each step, token_type_ids as its processor gives them)
    and its logits over prompt + all but the last."""
    from tunelab.vision.preprocess import image_processor, pixel_inputs

    soft = ref.config.image_token_id
    extra = pixel_inputs(images, image_processor(ref.name_or_path)) if images else {}
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            kinds = torch.tensor([[int(t == soft) for t in seq]])
            logits = ref(input_ids=torch.tensor([seq]), token_type_ids=kinds, **extra).logits[0]
            seq.append(int(logits[-1].argmax()))
    return seq[len(ids):], logits


@pytest.fixture(scope="module")
def llm(tiny_gemma3_vlm):
    from tunelab.engine.llm import LLM

    # a budget of 12 tokens a step: every image (18 tokens with its boundaries) lands on a chunk boundary
    return LLM(tiny_gemma3_vlm, dtype="fp32", device="cpu", max_model_len=256, block_size=BLOCK, num_blocks=128,
               max_num_batched_tokens=12)


@pytest.mark.parametrize("case", list(CASES))
def test_prefill_and_decode_logits_match_transformers(tiny_gemma3_vlm, hf, llm, case):
    from tunelab.engine.multimodal import build_image_inputs
    from tunelab.vision.preprocess import image_processor

    images = CASES[case]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, ref = _reference(hf, ids, images, steps=4)
    model = llm.engine.model  # the engine's weights, run here on a KV cache of our own
    kv = KVCache.allocate(model.spec, 64, BLOCK, torch.float32, torch.device("cpu"))
    seq = Sequence(ids + greedy[:-1])
    seq.block_table = list(range(3, 3 + -(-seq.num_tokens // BLOCK)))
    chunks = [len(ids)]
    if images:
        seq.images = build_image_inputs(ids, images, image_processor(tiny_gemma3_vlm), model)
        (first, end, _), *rest = seq.images.spans
        assert seq.images.chunk_tokens(0, first + 3) == first  # a chunk that would cut the image stops before it
        assert seq.images.chunk_tokens(first, 3) == end - first  # or, starting at it, runs to its end
        chunks = [first, end + 2 - first, len(ids) - end - 2]  # the second chunk holds the first image whole
    got = _engine_logits(model, kv, seq, chunks)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert got[len(ids) - 1:].argmax(-1).tolist() == greedy
    print(f"{case}: max abs logit diff {(got - ref).abs().max().item():.2e}")


def test_llm_greedy_matches_transformers(llm, hf):
    """The whole engine path: a 12-token step budget puts both images on chunk boundaries."""
    images = CASES["two images"]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, _ = _reference(hf, ids, images, steps=8)
    prompt = {"prompt_token_ids": ids, **({"multi_modal_data": {"image": images}} if images else {})}
    out = llm.generate(prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True), use_tqdm=False)
    assert out[0].outputs[0].token_ids == greedy


def test_vllm_style_prompt_with_one_soft_token_per_image(llm):
    """A text prompt may hold one <image_soft_token> per image; the engine repeats it per image token."""
    ids = _prompt(llm.get_tokenizer(), [RED, BLUE])
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    text = "look at<start_of_image><image_soft_token><end_of_image> and" \
           "<start_of_image><image_soft_token><end_of_image> and name the colour"
    short = llm.generate({"prompt": text, "multi_modal_data": {"image": [RED, BLUE]}}, params, use_tqdm=False)
    full = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": [RED, BLUE]}}, params,
                        use_tqdm=False)
    assert short[0].prompt_token_ids == ids
    assert short[0].outputs[0].token_ids == full[0].outputs[0].token_ids
    with pytest.raises(InvalidRequest, match="more <image_soft_token> runs than the 1 image"):
        llm.generate({"prompt": text, "multi_modal_data": {"image": RED}}, params, use_tqdm=False)
    with pytest.raises(InvalidRequest, match="the prompt holds image tokens but no images were given"):
        llm.generate({"prompt_token_ids": ids}, params, use_tqdm=False)  # a literal <start_of_image> in chat text
    with pytest.raises(InvalidRequest, match="each image needs a run of 16"):  # the engine takes ids as they are
        llm.engine.add_request("short-run", _prompt(llm.get_tokenizer(), [RED], per_image=15), params, images=[RED])


def test_a_bare_start_of_image_reads_as_the_gemma3_processor_reads_it(tiny_gemma3_vlm, llm):
    """vLLM's Gemma 3 prompts (and its chat template) write only <start_of_image> per image; the engine grows
    each into Gemma3Processor's run, newlines included."""
    from transformers import AutoTokenizer, Gemma3ImageProcessorPil, Gemma3Processor

    named = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil.from_pretrained(tiny_gemma3_vlm),
                                tokenizer=AutoTokenizer.from_pretrained(tiny_gemma3_vlm, extra_special_tokens=named),
                                image_seq_length=16)
    text = "look at<start_of_image> and<start_of_image> name the colour"
    ref = processor(text=[text], images=[[RED, BLUE]], return_tensors="pt")["input_ids"][0].tolist()
    out = llm.generate({"prompt": text, "multi_modal_data": {"image": [RED, BLUE]}},
                       SamplingParams(max_tokens=1, temperature=0), use_tqdm=False)
    assert out[0].prompt_token_ids == ref and out[0].prompt == text


def test_prefix_cache_keys_on_image_content(llm):
    other = Image.new("RGB", (40, 20), (30, 200, 40))
    prefix_cache_keys_on_image_content(llm, _prompt(llm.get_tokenizer(), [RED]), other)


def test_a_peft_adapter_on_the_language_model_matches_transformers_merged(tiny_gemma3_vlm, llm, tmp_path):
    """A PEFT LoRA on the language model served by the engine gives the greedy output of transformers'
    model with the adapter merged."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(3)
    base = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma3_vlm, dtype=torch.float32)
    targets = r".*language_model.*\.(q_proj|v_proj|o_proj|gate_proj|down_proj)"
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    merged = peft_model.merge_and_unload().eval()
    ids = _prompt(llm.get_tokenizer(), [BLUE])
    greedy, logits = _reference(merged, ids, [BLUE], steps=3)
    expected = logits[len(ids) - 1:].log_softmax(-1)[range(len(greedy)), greedy].tolist()
    llm.engine.add_adapter("g3-lora", tmp_path / "lora")
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True, logprobs=0)
    prompt = {"prompt_token_ids": ids, "multi_modal_data": {"image": BLUE}}
    out = llm.generate(prompt, params, use_tqdm=False, adapter="g3-lora")[0].outputs[0]
    plain = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0]
    assert out.token_ids == greedy
    assert [lp.logprob for lp in out.logprobs] == pytest.approx(expected, abs=1e-4)
    assert plain.logprobs[0].logprob != pytest.approx(expected[0], abs=1e-2)  # the adapter changed the model
