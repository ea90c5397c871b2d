"""AsyncEngine: streaming deltas add up, concurrent requests, abort frees memory, adapters, stats."""

from __future__ import annotations

import asyncio
import threading

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
    # Deltas already queued before the abort may still arrive; the stream must end well short.
    assert got[-1].finish_reason == "abort" and len(got) < params.max_tokens // 2


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


def test_n_completions_and_logprobs_stream_per_index(engine):
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=7, n=3, logprobs=2, ignore_eos=True)

    deltas = asyncio.run(_collect(engine, "many", [5, 6, 7], params))
    by_index = {i: [d for d in deltas if d.index == i] for i in range(3)}
    for got in by_index.values():
        assert sum(d.finish_reason is not None for d in got) == 1 and got[-1].finish_reason == "length", got[-1]
        lps = [lp for d in got for lp in d.logprobs]
        assert [lp.token_id for lp in lps] == [t for d in got for t in d.token_ids]
        assert all(len(lp.top) == 2 and lp.logprob <= 0 for lp in lps)
    assert len({tuple(t for d in got for t in d.token_ids) for got in by_index.values()}) > 1


def test_abort_racing_the_engine_thread_ends_each_stream_once(engine):
    params = SamplingParams(max_tokens=300, temperature=0, ignore_eos=True)

    async def one(rid):
        got = []
        async for delta in engine.generate(rid, [5, 6, 7], params):
            got.append(delta)
            if len(got) == 2:
                engine.abort(rid)  # the thread may be mid-step with this sequence in its batch
        return got

    async def main():
        return await asyncio.gather(*(one(f"race{i}") for i in range(4)))

    for got in asyncio.run(main()):
        assert [d.finish_reason for d in got].count("abort") == 1 and got[-1].finish_reason == "abort"
    assert engine.stats()["kv_usage"] == 0.0


def test_adapters_by_path_and_removal_ends_their_streams(engine, tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "ad")
    engine.add_adapter("ad", tmp_path / "ad")
    assert engine.adapters() == {"ad": str(tmp_path / "ad")}
    params = SamplingParams(max_tokens=300, temperature=0, ignore_eos=True)

    async def main():
        got = []
        async for delta in engine.generate("lora", [5, 6, 7], params, adapter="ad"):
            got.append(delta)
            if len(got) == 2:
                await asyncio.to_thread(engine.remove_adapter, "ad")
        return got

    assert asyncio.run(asyncio.wait_for(main(), timeout=30))[-1].finish_reason == "abort"
    assert engine.adapters() == {} and engine.stats()["kv_usage"] == 0.0


def test_shutdown_drains_then_aborts_what_is_left(tiny_models):
    engines = [AsyncEngine(tiny_models["llama"], dtype="fp32", max_model_len=256, block_size=4, num_blocks=256)
               for _ in range(2)]
    params = SamplingParams(max_tokens=250, temperature=0, ignore_eos=True)

    async def main(eng, drain_s):
        got = []
        async for delta in eng.generate("long", [5, 6, 7], params):
            if not got:  # right after the first token: most of the 250 are still to come
                threading.Thread(target=eng.shutdown, args=(drain_s,)).start()
            got.append(delta)
        return got

    drained = asyncio.run(asyncio.wait_for(main(engines[0], 60.0), timeout=60))
    cut = asyncio.run(asyncio.wait_for(main(engines[1], 0.0), timeout=60))
    assert drained[-1].finish_reason == "length" and drained[-1].completion_tokens == 250
    assert cut[-1].finish_reason == "abort" and cut[-1].completion_tokens < 250
    for eng in engines:
        eng._thread.join(timeout=10)
        assert not eng._thread.is_alive()


def test_stats_count_the_steps_run(engine):
    """One request alone: a step for its prompt (which samples the first token), then one per token."""
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    before = engine.stats()["steps"]
    asyncio.run(_collect(engine, "counted", [5, 6, 7], params))
    assert engine.stats()["steps"] - before == 3
