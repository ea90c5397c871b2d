"""Prompt-lookup speculative decoding: the proposer, the acceptance rule, and end-to-end equality
with plain greedy decoding (including stop tokens, stop strings, max_tokens and batches)."""

from __future__ import annotations

import pytest

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.speculative import accepted, propose
from tunelab.errors import ConfigError


def test_propose_continues_the_latest_longest_match():
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert propose(tokens, 3) == [7, 8, 5]  # suffix (2, 3) last seen at 6..7, then 7 8 5
    assert propose([4, 5, 6, 4], 2) == [5, 6]  # only a 1-gram matches
    assert propose([1, 2, 3], 4) == []  # nothing repeats
    assert propose([1, 2, 1, 2], 5) == [1, 2]  # a match near the end gives a short draft
    assert propose(tokens, 0) == []


def test_accepted_takes_drafts_while_they_match_then_the_models_token():
    assert accepted([7, 8, 5], [7, 8, 5, 4]) == [7, 8, 5, 4]  # all right: 3 drafts + 1 bonus
    assert accepted([7, 8, 5], [7, 6, 5, 4]) == [7, 6]  # second guess wrong: model's token instead
    assert accepted([7], [3, 9]) == [3]
    assert accepted([], [3]) == [3]


def test_negative_draft_count_is_a_config_error(tiny_models):
    with pytest.raises(ConfigError, match="num_speculative_tokens"):
        LLM(tiny_models["llama"], dtype="fp32", num_speculative_tokens=-1)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_speculative_greedy_equals_plain_greedy(tiny_models, arch):
    # Repetitive prompts, so drafts are proposed and some are accepted.
    prompts = [[5, 6, 7, 8] * 6, [9, 10, 11] * 5 + [9], [12, 13, 14, 15, 16, 12, 13]]
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in (30, 17, 25)]
    plain = LLM(tiny_models[arch], dtype="fp32", max_model_len=96, block_size=4)
    spec = LLM(tiny_models[arch], dtype="fp32", max_model_len=96, block_size=4, num_speculative_tokens=4)
    want = plain.generate(prompts, params)
    got = spec.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert [o.text for o in got] == [o.text for o in want]
    assert [o.outputs[0].finish_reason for o in got] == ["length"] * 3
    stats = spec.engine.stats()
    assert stats["spec_draft_tokens"] > 0 and stats["generation_tokens_total"] == 30 + 17 + 25
    assert spec.engine.scheduler.block_manager.num_free == spec.engine.config.num_blocks  # all freed


def test_stops_inside_an_accepted_draft_end_the_output_there(tiny_models):
    plain = LLM(tiny_models["llama"], dtype="fp32", max_model_len=96, block_size=4)
    spec = LLM(tiny_models["llama"], dtype="fp32", max_model_len=96, block_size=4, num_speculative_tokens=6)
    prompt = [5, 6, 7, 8] * 6
    free_run = plain.generate([prompt], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True))[0]
    stop_id = free_run.token_ids[9]  # a token the greedy output reaches mid-way
    stop_text = plain.tokenizer.decode(free_run.token_ids[6:8])
    for params in (SamplingParams(max_tokens=24, temperature=0, stop_token_ids=[stop_id]),
                   SamplingParams(max_tokens=24, temperature=0, stop=[stop_text]),
                   SamplingParams(max_tokens=7, temperature=0, ignore_eos=True)):
        want, got = plain.generate([prompt], params)[0], spec.generate([prompt], params)[0]
        assert (got.token_ids, got.text, got.outputs[0].finish_reason) == \
            (want.token_ids, want.text, want.outputs[0].finish_reason)


def test_sampled_and_penalised_requests_are_not_drafted(tiny_models):
    spec = LLM(tiny_models["llama"], dtype="fp32", max_model_len=96, num_speculative_tokens=4)
    prompt = [5, 6, 7, 8] * 6
    spec.generate([prompt], SamplingParams(max_tokens=10, temperature=0.8, seed=1))
    spec.generate([prompt], SamplingParams(max_tokens=10, temperature=0, repetition_penalty=1.3))
    spec.generate([prompt], SamplingParams(max_tokens=10, temperature=0, logprobs=2))
    assert spec.engine.stats()["spec_draft_tokens"] == 0


def test_streamed_deltas_of_a_drafting_engine_add_up(tiny_models):
    """Several tokens per step still stream as token ids and text that add up to the output."""
    import asyncio

    from tunelab.engine import AsyncEngine

    prompt, params = [5, 6, 7, 8] * 6, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    want = LLM(tiny_models["llama"], dtype="fp32", max_model_len=96).generate([prompt], params)[0]
    engine = AsyncEngine(tiny_models["llama"], dtype="fp32", max_model_len=96, num_speculative_tokens=4)
    try:
        async def collect():
            return [d async for d in engine.generate("r", prompt, params)]

        deltas = asyncio.run(collect())
    finally:
        engine.shutdown()
    assert [t for d in deltas for t in d.token_ids] == want.token_ids
    assert "".join(d.text for d in deltas) == want.text
    assert any(len(d.token_ids) > 1 for d in deltas)  # some steps did yield several tokens
