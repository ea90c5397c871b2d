"""AsyncEngine: streaming deltas add up, concurrent requests, abort frees memory, adapters, stats."""

from __future__ import annotations

import asyncio

import pytest

from tunelab.engine import LLM, AsyncEngine, SamplingParams
from tunelab.errors import InvalidRequest


@pytest.fixture(scope="module")
def engine(tiny_models):
    eng = AsyncEngine(tiny_models["llama"], dtype="fp32", max_model_len=256, block_size=4, num_blocks=512)
    yield eng
    eng.shutdown()


async def _collect(engine, rid, prompt, params, adapter=None):
    return [d async for d in engine.generate(rid, prompt, params, adapter)]


def test_stream_matches_offline_generation(engine, tiny_models):
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    prompts = [[5, 6, 7, 100 + i] for i in range(4)]

    async def main():
        return await asyncio.gather(*(_collect(engine, f"r{i}", p, params) for i, p in enumerate(prompts)))

    streams = asyncio.run(main())
    offline = LLM(tiny_models["llama"], dtype="fp32", max_model_len=256).generate(prompts, params)
    for deltas, ref in zip(streams, offline):
        assert [t for d in deltas for t in d.token_ids] == ref.token_ids
        assert "".join(d.text for d in deltas) == ref.text
        assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 12
        assert all(d.finish_reason is None for d in deltas[:-1])


def test_abort_ends_stream_and_frees_blocks(engine):
    params = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)

    async def main():
        got = []
        async for delta in engine.generate("long", [5, 6, 7], params):
            got.append(delta)
            if len(got) == 3:
                assert engine.abort("long")
                assert engine.stats()["kv_usage"] == 0.0  # freed at once, not at the next step
        return got

    got = asyncio.run(main())
    assert got[-1].finish_reason == "abort" and len(got) < 10


def test_leaving_the_stream_early_aborts(engine):
    params = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)

    async def main():
        agen = engine.generate("gone", [5, 6, 7], params)
        await agen.__anext__()
        await agen.aclose()  # the client went away

    asyncio.run(main())
    stats = engine.stats()
    assert stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_usage"] == 0.0


def test_bad_requests_raise_before_streaming(engine):
    async def main(**kw):
        return await _collect(engine, "bad", kw.get("prompt", [5]), SamplingParams(max_tokens=2), kw.get("adapter"))

    with pytest.raises(InvalidRequest, match="maximum model length"):
        asyncio.run(main(prompt=list(range(5, 300))))
    with pytest.raises(InvalidRequest, match="adapter"):
        asyncio.run(main(adapter="missing"))
    assert set(engine.stats()) >= {"running", "waiting", "kv_usage", "preemptions", "generation_tokens_total"}
