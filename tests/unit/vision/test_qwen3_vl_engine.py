"""The engine's Qwen3-VL against transformers' Qwen3VLForConditionalGeneration on a tiny random one (Qwen3's
q/k norms, interleaved M-RoPE, 16-px patches, DeepStack after both decoder layers): prefill chunked through
an image, decode, greedy output, a PEFT LoRA; the same checks as Qwen2.5-VL's (test_vlm_engine.py), whose helpers
these are."""

from __future__ import annotations

import pytest
import torch
from test_vlm_engine import BLOCK, CASES, _engine_logits, _prompt, _reference, adapter_matches_merged

from tunelab.engine.config import SamplingParams
from tunelab.engine.kv_cache import KVCache
from tunelab.engine.sequence import Sequence


@pytest.fixture(scope="module")
def hf(tiny_qwen3_vl):
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(tiny_qwen3_vl, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def llm(tiny_qwen3_vl):
    from tunelab.engine.llm import LLM

    return LLM(tiny_qwen3_vl, dtype="fp32", device="cpu", max_model_len=256, block_size=BLOCK, num_blocks=128)


@pytest.mark.parametrize("case", list(CASES))
def test_prefill_and_decode_logits_match_transformers(tiny_qwen3_vl, hf, llm, case):
    from tunelab.engine.multimodal import build_image_inputs
    from tunelab.vision.preprocess import image_processor

    images = CASES[case]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, ref = _reference(hf, ids, images, steps=6)
    model = llm.engine.model
    kv = KVCache.allocate(model.spec, 32, BLOCK, torch.float32, torch.device("cpu"))
    seq = Sequence(ids + greedy[:-1])
    seq.block_table = list(range(3, 3 + -(-seq.num_tokens // BLOCK)))
    if images:
        seq.images = build_image_inputs(ids, images, image_processor(tiny_qwen3_vl), model)
        assert seq.images.positions[1] != seq.images.positions[2]  # a 2-D grid: interleaving matters
    # the first chunk ends inside the first image's run: the second starts with image rows cached
    got = _engine_logits(model, kv, seq, [len(ids) - 7, 7 - 3, 3])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert got[len(ids) - 1:].argmax(-1).tolist() == greedy


@pytest.mark.parametrize("case", list(CASES))
def test_llm_greedy_matches_transformers(llm, hf, case):
    images = CASES[case]
    ids = _prompt(llm.get_tokenizer(), images)
    greedy, _ = _reference(hf, ids, images, steps=8)
    prompt = {"prompt_token_ids": ids, **({"multi_modal_data": {"image": images}} if images else {})}
    out = llm.generate(prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True), use_tqdm=False)
    assert out[0].outputs[0].token_ids == greedy


def test_deepstack_features_reach_the_decoder(llm):
    """DeepStack moves the reply: zeroing the tower's DeepStack mergers changes the image rows' extra
    columns only, and the greedy reply with them (so the parity above covers them)."""
    from test_vlm_engine import BLUE

    model = llm.engine.model
    ids = _prompt(llm.get_tokenizer(), [BLUE])
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=0)
    prompt = {"prompt_token_ids": ids, "multi_modal_data": {"image": BLUE}}
    llm.engine.scheduler.block_manager.reset_prefix_cache()
    with_ds = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0]
    saved = [p.detach().clone() for p in model.visual.deepstack_merger_list.parameters()]
    try:
        with torch.no_grad():
            for p in model.visual.deepstack_merger_list.parameters():
                p.zero_()
        llm.engine.scheduler.block_manager.reset_prefix_cache()
        without = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0]
    finally:
        with torch.no_grad():
            for p, s in zip(model.visual.deepstack_merger_list.parameters(), saved):
                p.copy_(s)
        llm.engine.scheduler.block_manager.reset_prefix_cache()
    assert without.logprobs[0].logprob != pytest.approx(with_ds.logprobs[0].logprob, abs=1e-3)


def test_a_peft_adapter_on_qwen3_vl_matches_transformers_merged(tiny_qwen3_vl, llm, tmp_path):
    adapter_matches_merged(tiny_qwen3_vl, llm, tmp_path)
