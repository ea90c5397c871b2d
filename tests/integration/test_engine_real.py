"""The engine on the real default model (Gemma 3 270M): agreement with transformers, streaming."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tunelab.engine import LLM, AsyncEngine, SamplingParams

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(None, dtype="fp32", max_model_len=1024)


def test_greedy_matches_transformers(llm):
    from transformers import AutoModelForCausalLM

    prompt = llm.tokenizer.encode("The history of the printing press begins")
    ours = llm.generate([prompt], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))[0]
    ref = AutoModelForCausalLM.from_pretrained(llm.engine.model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert ours.token_ids == out[0, len(prompt):].tolist()
    assert ours.text.strip()


def test_batch_of_chats_and_stream(llm):
    convs = [[{"role": "user", "content": q}] for q in ("Name a color.", "Say hello.", "Count to three.")]
    outs = llm.chat(convs, SamplingParams(max_tokens=12, temperature=0))
    assert all(o.token_ids and o.finish_reason in ("stop", "length") for o in outs)
    engine = AsyncEngine(engine=llm.engine)

    async def stream():
        prompt = outs[0].prompt_token_ids
        return [d async for d in engine.generate("r", prompt, SamplingParams(max_tokens=12, temperature=0))]

    try:
        deltas = asyncio.run(stream())
    finally:
        engine.shutdown()
    assert [t for d in deltas for t in d.token_ids] == outs[0].token_ids
