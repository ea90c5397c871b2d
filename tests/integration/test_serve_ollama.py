"""The Ollama API subset, driven by the official `ollama` client and raw NDJSON."""

from __future__ import annotations

import json

import httpx
import pytest
from ollama import Client, ResponseError

from serve_util import start_server


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["gemma3"], served_name="tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(host=server.url)


MSGS = [{"role": "user", "content": "hello"}]
OPTS = {"temperature": 0, "num_predict": 6, "seed": 1}


def test_version_tags_show(client):
    assert client.list().models[0].model == "tiny"
    info = client.show("tiny")
    assert info.details.family == "gemma3_text" and info.modelinfo["general.context_length"] == 1024
    assert "im_start" in info.template  # the tiny tokenizer's own ChatML template


def test_chat_whole_and_streamed_agree(client):
    whole = client.chat(model="tiny", messages=MSGS, options=OPTS)
    assert whole.done and whole.message.role == "assistant"
    assert 1 <= whole.eval_count <= 6 and whole.prompt_eval_count > 0
    parts = list(client.chat(model="tiny", messages=MSGS, options=OPTS, stream=True))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_generate_and_latest_suffix(client):
    a = client.generate(model="tiny:latest", prompt="hi", options=OPTS)
    b = "".join(p.response for p in client.generate(model="tiny", prompt="hi", options=OPTS, stream=True))
    assert a.response == b and a.done


def test_unknown_model_is_an_error(client):
    with pytest.raises(ResponseError) as info:
        client.chat(model="nope", messages=MSGS)
    assert info.value.status_code == 404


def test_option_out_of_the_engines_range_is_a_400_naming_it(client, server):
    with pytest.raises(ResponseError) as info:
        client.chat(model="tiny", messages=MSGS, options={"presence_penalty": 5})
    assert info.value.status_code == 400 and "options.presence_penalty must be in [-2, 2]" in str(info.value)
    body = {"model": "tiny", "prompt": "x", "stream": False, "options": {"top_k": -3}}
    r = httpx.post(server.url + "/api/generate", json=body)
    assert r.status_code == 400 and r.json()["error"].startswith("options.top_k must be")


def test_raw_ndjson_stream(server):
    body = {"model": "tiny", "prompt": "abc", "raw": True, "options": OPTS}
    with httpx.stream("POST", server.url + "/api/generate", json=body) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and all(not x["done"] for x in lines[:-1])
    assert lines[-1]["eval_count"] == 6 or lines[-1]["done_reason"] == "stop"


def test_curl_style_form_content_type_is_read_as_json(server):
    """Ollama's docs use `curl -d '{...}'`, which labels the JSON body as a form."""
    r = httpx.post(server.url + "/api/show", content=b'{"model": "tiny"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["details"]["family"] == "gemma3_text"
