"""`tunelab serve` on a tiny model, driven by the official openai client (sync, async, streaming)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from transformers import AutoTokenizer

from serve_util import API_KEY, start_server, wait_idle


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["qwen2"], api_key=API_KEY, served_name="tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models["qwen2"])


HI = [{"role": "user", "content": "hello there"}]


def test_models_lists_base(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].model_extra["max_model_len"] == 1024


def test_chat_usage_matches_the_tokens(client, tokenizer):
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=7, temperature=0,
                                       extra_body={"ignore_eos": True})
    prompt = tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=False)
    assert r.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.role == "assistant"
    assert r.model == "tiny"


def test_greedy_is_deterministic_and_stream_equals_whole(client):
    kw = dict(model="tiny", messages=HI, max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    assert whole == client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")


def test_sse_wire_format_ends_with_done(server):
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(events)  # only with stream_options.include_usage


def test_seeded_sampling_repeats_and_n_choices_differ(client):
    kw = dict(model="tiny", prompt="once upon", max_tokens=8, temperature=1.0, seed=7, n=3,
              extra_body={"ignore_eos": True})
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1
    assert a.usage.completion_tokens == 24


def test_stop_string_cuts_the_output(client):
    full = client.completions.create(model="tiny", prompt="xyz", max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = full[3:5]
    assert stop and stop in full
    cut = client.completions.create(model="tiny", prompt="xyz", max_tokens=16, temperature=0,
                                    stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_logprobs_chat_and_completion(client):
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for tok in content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 3
        assert tok.top_logprobs[0].logprob >= tok.top_logprobs[-1].logprob
        assert tok.logprob == pytest.approx(tok.top_logprobs[0].logprob)  # greedy picks the best
    c = client.completions.create(model="tiny", prompt="abc", max_tokens=3, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert "".join(lp.tokens) == c.choices[0].text


def test_prompt_as_token_ids(client, tokenizer):
    ids = tokenizer.encode("hello world", add_special_tokens=False)
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens == len(ids)


def test_async_client_concurrent_requests(server):
    async def go():
        aclient = AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
        calls = [aclient.chat.completions.create(model="tiny", messages=HI, max_tokens=5,
                                                 temperature=0) for _ in range(8)]
        out = await asyncio.gather(*calls)
        stream = await aclient.completions.create(model="tiny", prompt="hey", max_tokens=4,
                                                  stream=True, temperature=0)
        pieces = [c.choices[0].text async for c in stream if c.choices]
        await aclient.close()
        return out, pieces

    results, pieces = asyncio.run(go())
    assert len({r.choices[0].message.content for r in results}) == 1  # batching keeps greedy exact
    assert len(pieces) >= 1


def test_metrics_after_traffic(server):
    m = wait_idle(server.url)
    assert m["tunelab_time_to_first_token_seconds_count"] > 0
    assert m["tunelab_e2e_request_latency_seconds_count"] > 0
    assert m["tunelab_generation_tokens_total"] > 0
    assert m["tunelab_kv_cache_usage_perc"] == 0
