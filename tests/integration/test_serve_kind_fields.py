"""A field of another kind of part, block or message is a 400 naming it and the kind, against a real
server and through the official clients (which pass such fields on as given): an Anthropic text block's
`source`, a Responses input_text's `image_url`, a chat text part's `image_url`, an Ollama user turn's
`thinking`. The same request without the stray field is answered."""

from __future__ import annotations

import httpx
import openai
import pytest
from ollama import Client, ResponseError

from serve_util import openai_error, start_server

anthropic = pytest.importorskip("anthropic", reason="the anthropic client is not installed")
PNG = {"type": "base64", "media_type": "image/png", "data": "AAAA"}


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["llama"], served_name="tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def test_anthropic_block_fields_of_another_kind(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)

    def send(block: dict):
        return client.messages.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": [block]}])

    for block, field, kind in [({"type": "text", "text": "hi", "source": PNG}, "source", "text"),
                               ({"type": "text", "text": "hi", "tool_use_id": "t"}, "tool_use_id", "text"),
                               ({"type": "image", "source": PNG, "text": "hi"}, "text", "image")]:
        with pytest.raises(anthropic.BadRequestError) as info:
            send(block)
        error = info.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert f"unsupported field 'messages.0.content.0.{field}': a '{kind}' block" in error["message"]
    assert send({"type": "text", "text": "hi"}).stop_reason == "max_tokens"


def test_responses_part_fields_of_another_kind(oai):
    def send(part: dict):
        return oai.responses.create(model="tiny", max_output_tokens=2, temperature=0,
                                    input=[{"role": "user", "content": [part]}])

    err = openai_error(lambda: send({"type": "input_text", "text": "hi", "image_url": "data:image/png;base64,AAAA"}))
    assert err["param"] == "input.0.content.0.image_url" and "'input_text' part" in err["message"]
    err = openai_error(lambda: send({"type": "input_text", "text": "hi", "logprobs": [{"t": 1}]}))
    assert err["param"] == "input.0.content.0.logprobs"
    assert send({"type": "input_text", "text": "hi"}).status == "incomplete"  # max_output_tokens reached


def test_chat_part_and_message_fields_of_another_kind(oai):
    def send(message: dict):
        return oai.chat.completions.create(model="tiny", max_tokens=2, temperature=0, messages=[message])

    text = {"type": "text", "text": "hi"}
    err = openai_error(lambda: send({"role": "user", "content": [{**text, "image_url": {"url": "data:,"}}]}))
    assert err["param"] == "messages.0.content.0.image_url" and "a 'text' part has no image_url" in err["message"]
    err = openai_error(lambda: send({"role": "user", "content": "hi", "tool_call_id": "call_1"}))
    assert err["param"] == "messages.0.tool_call_id" and "a 'user' message" in err["message"]
    assert send({"role": "user", "content": [text]}).choices[0].finish_reason == "length"


def test_ollama_message_fields_of_another_role(server):
    ollama = Client(host=server.url)
    with pytest.raises(ResponseError) as info:
        ollama.chat(model="tiny", messages=[{"role": "user", "content": "hi", "thinking": "hm"}])
    assert info.value.status_code == 400 and "messages.0.thinking" in info.value.error
    assert "a 'user' message has no thinking" in info.value.error
    r = httpx.post(server.url + "/api/chat", json={"model": "tiny", "stream": False, "messages": [
        {"role": "user", "content": "hi", "tool_name": "lookup"}]})
    assert r.status_code == 400 and list(r.json()) == ["error"] and "messages.0.tool_name" in r.json()["error"]
    reply = ollama.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
    assert reply.done
