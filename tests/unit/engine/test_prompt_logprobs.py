"""SamplingParams(prompt_logprobs=k): each prompt token's logprob equals a full HF forward's."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.errors import InvalidRequest

PROMPTS = [[5, 60, 61, 62, 300, 7, 8, 9, 10, 11, 12, 40, 41], [5, 60, 61, 62, 300, 7, 8, 9, 99], [77, 3]]


def _reference(model_dir, prompt: list[int]) -> torch.Tensor:
    """log p(token i | tokens < i) for i >= 1 from transformers, (T-1,)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, :-1]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_prompt_logprobs_equal_a_full_forward_in_chunks_and_with_a_warm_prefix_cache(tiny_models, arch):
    # 4-token blocks and a 6-token step budget: prompts prefill in chunks, and the second prompt
    # shares two full blocks with the first, which the prefix cache holds after the warm-up
    llm = LLM(tiny_models[arch], dtype="fp32", max_model_len=64, block_size=4, max_num_batched_tokens=6)
    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=1), use_tqdm=False)  # warm the prefix cache
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=2), use_tqdm=False)
    for prompt, out in zip(PROMPTS, outs):
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
        got = torch.tensor([lp.logprob for lp in out.prompt_logprobs[1:]])
        assert [lp.token_id for lp in out.prompt_logprobs[1:]] == prompt[1:]
        torch.testing.assert_close(got, _reference(tiny_models[arch], prompt), atol=1e-4, rtol=0)
        for lp in out.prompt_logprobs[1:]:
            assert len(lp.top) == 2 and lp.top[0][1] >= max(lp.top[1][1], lp.logprob - 1e-6)  # best first


def test_prompt_logprobs_are_off_by_default_and_checked(tiny_models):
    llm = LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=64)
    assert llm.generate(PROMPTS[:1], SamplingParams(max_tokens=1), use_tqdm=False)[0].prompt_logprobs is None
    with pytest.raises(InvalidRequest, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=-1)


def test_prompt_logprobs_start_skips_the_context_and_may_reuse_its_cached_blocks(tiny_models):
    llm = LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=64, block_size=4)
    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=1), use_tqdm=False)  # caches blocks of positions 0..11
    params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, prompt_logprobs_start=10)
    for prompt, out in zip(PROMPTS, llm.generate(PROMPTS, params, use_tqdm=False)):
        start = min(10, len(prompt))
        assert len(out.prompt_logprobs) == len(prompt) and not any(out.prompt_logprobs[:start])
        got = torch.tensor([lp.logprob for lp in out.prompt_logprobs[start:]])
        torch.testing.assert_close(got, _reference(tiny_models["qwen2"], prompt)[start - 1:], atol=1e-4, rtol=0)
    with pytest.raises(InvalidRequest, match="prompt_logprobs_start"):
        SamplingParams(prompt_logprobs_start=-2)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_prompt_logprobs_tokens_join_the_first_scored_rows_top(tiny_models, arch):
    """Each extra token's logprob at the first scored position equals the reference's there, after
    the row's own alternatives; an id outside the vocabulary gets -inf; only that row carries them."""
    llm = LLM(tiny_models[arch], dtype="fp32", max_model_len=64, block_size=4)
    prompt, start, extra = PROMPTS[0], 9, [3, 250, 11]
    params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1, prompt_logprobs_start=start,
                            prompt_logprobs_tokens=[*extra, 10 ** 6])
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    first = out.prompt_logprobs[start]
    assert [t for t, _ in first.top[1:]] == [*extra, 10 ** 6] and first.top[-1][1] == float("-inf")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
    with torch.no_grad():
        want = torch.log_softmax(model(torch.tensor([prompt[:start]])).logits[0, -1], -1)
    torch.testing.assert_close(torch.tensor([lp for _, lp in first.top[1:-1]]), want[extra], atol=1e-4, rtol=0)
    assert first.top[0][0] == int(want.argmax()) and all(len(lp.top) == 1 for lp in out.prompt_logprobs[start + 1:])
    with pytest.raises(InvalidRequest, match="prompt_logprobs_tokens"):
        SamplingParams(prompt_logprobs_tokens=[3])  # without prompt_logprobs
