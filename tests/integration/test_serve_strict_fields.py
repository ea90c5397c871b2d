"""No request field is ignored silently, against a real server: unknown and known-unserved fields
are 400s naming them (OpenAI's and Ollama's error shapes), harmless ones change nothing, and the
official clients' defaults still pass."""

from __future__ import annotations

import httpx
import openai
import pytest
from ollama import Client, ResponseError

from serve_util import openai_error, start_server

HI = [{"role": "user", "content": "hello there"}]
GREEDY = {"model": "tiny", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["llama"], served_name="tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("extra, param, words", [
    ({"foo": 1}, "foo", "unsupported field 'foo'"),
    ({"top_kk": 5}, "top_kk", "did you mean 'top_k'?"),
    ({"Temperature": 0.5}, "Temperature", "did you mean 'temperature'?"),
])
def test_unknown_field_is_a_400_naming_it(client, extra, param, words):
    err = openai_error(lambda: client.chat.completions.create(messages=HI, extra_body=extra, **GREEDY))
    assert err["param"] == param and words in err["message"]


def test_known_unserved_fields_are_400s_saying_why(client):
    err = openai_error(lambda: client.chat.completions.create(messages=HI, logit_bias={"5": 10}, **GREEDY))
    assert err["param"] == "logit_bias" and "not implemented" in err["message"]
    err = openai_error(lambda: client.completions.create(prompt="hi", best_of=3, **GREEDY))
    assert err["param"] == "best_of"
    err = openai_error(lambda: client.chat.completions.create(messages=HI, modalities=["text", "audio"], **GREEDY))
    assert err["param"] == "modalities" and "text only" in err["message"]


def test_harmless_fields_change_nothing(client):
    plain = client.chat.completions.create(messages=HI, **GREEDY).choices[0].message.content
    tagged = client.chat.completions.create(messages=HI, user="u1", metadata={"run": "a"}, store=False,
                                            service_tier="auto", safety_identifier="s", **GREEDY)
    assert tagged.choices[0].message.content == plain


def test_an_image_part_names_its_path(client):
    """A text-only model answers an image with a 400 naming the part (test_serve_vision: a VLM's reply)."""
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    err = openai_error(lambda: client.chat.completions.create(messages=[{"role": "user", "content": parts}],
                                                      **GREEDY))
    assert err["param"] == "messages.0.content.1" and "text only" in err["message"]
    parts[1] = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    err = openai_error(lambda: client.chat.completions.create(messages=[{"role": "user", "content": parts}],
                                                      **GREEDY))
    assert err["param"] == "messages.0.content.1.type" and "'input_audio' content parts" in err["message"]


def test_raw_http_nested_unknown_field(server):
    body = {**GREEDY, "messages": [{"role": "user", "content": "x", "nmae": "bob"}]}
    err = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30).json()["error"]
    assert err["param"] == "messages.0.nmae" and "did you mean 'name'?" in err["message"]
    r = httpx.post(server.url + "/v1/adapters", json={"name": "a", "path": "/x", "force": True}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "force"


def test_ollama_unknown_and_unserved_options_name_them(server):
    ollama = Client(host=server.url)
    for option, words in [("temprature", "did you mean 'temperature'?"), ("mirostat", "not implemented")]:
        with pytest.raises(ResponseError) as info:
            ollama.chat(model="tiny", messages=HI, options={option: 2})
        assert info.value.status_code == 400 and f"options.{option}" in info.value.error
        assert words in info.value.error
    r = httpx.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "hi", "suffix": "x"})
    assert r.status_code == 400 and list(r.json()) == ["error"] and "'suffix'" in r.json()["error"]
    with pytest.raises(ResponseError) as info:
        ollama.chat(model="tiny", messages=[{"role": "user", "content": "?", "images": ["AAAA"]}])
    assert info.value.status_code == 400 and "messages.0.images" in info.value.error


def test_ollama_client_defaults_and_resource_options_pass(server):
    opts = {"temperature": 0, "num_predict": 3, "num_ctx": 4096, "num_thread": 2, "mirostat": 0}
    reply = Client(host=server.url).chat(model="tiny", messages=HI, options=opts, keep_alive="5m")
    assert reply.done  # the client also sends tools: [] and stream: false
