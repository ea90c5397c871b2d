"""Anthropic's Messages API with the official anthropic client: whole, streamed, thinking, errors."""

from __future__ import annotations

import shutil

import httpx
import pytest

from serve_util import API_KEY, start_server
from test_serve_reasoning import QWEN3_STYLE

anthropic = pytest.importorskip("anthropic", reason="the anthropic client is not installed")
KW = dict(model="thinker", max_tokens=10, extra_body={"temperature": 0})  # newer clients dropped the kwarg
OFF = {"type": "disabled"}  # the template closes an empty think block: the output is all text
USER = [{"role": "user", "content": "why?"}]


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    model = tmp_path_factory.mktemp("thinker") / "thinker"
    shutil.copytree(tiny_models["qwen2"], model)
    (model / "chat_template.jinja").write_text(QWEN3_STYLE)
    srv = start_server(model, served_name="thinker", dtype="float32", api_key=API_KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0)  # sends x-api-key


@pytest.fixture(scope="module")
def openai(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def _chat(openai, messages, thinking: bool, **extra):
    return openai.chat.completions.create(
        model="thinker", messages=messages, max_tokens=10, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": thinking}}, **extra).choices[0]


def test_text_reply_equals_chat_completions(client, openai):
    m = client.messages.create(messages=USER, system="be brief", thinking=OFF, **KW)
    chat = _chat(openai, [{"role": "system", "content": "be brief"}, *USER], False)
    assert m.type == "message" and m.role == "assistant" and m.model == "thinker"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == chat.message.content
    assert m.stop_reason == ("max_tokens" if chat.finish_reason == "length" else "end_turn")
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 10


def test_system_blocks_and_history(client, openai):
    system = [{"type": "text", "text": "be ", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "brief"}]
    history = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
               {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                                                 {"type": "text", "text": "hello"}]},
               {"role": "user", "content": "why?"}]
    m = client.messages.create(messages=history, system=system, thinking=OFF, **KW)
    chat = _chat(openai, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}, *USER], False)
    assert m.content[0].text == chat.message.content


def test_thinking_block_then_text(client, openai):
    m = client.messages.create(messages=USER, **KW)
    chat = _chat(openai, USER, True)
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == chat.message.model_extra["reasoning_content"]


def test_stop_sequences(client, openai):
    free = client.messages.create(messages=USER, thinking=OFF, **{**KW, "max_tokens": 20})
    text = free.content[0].text
    stop = text[len(text) // 2]  # the tiny model's greedy reply is a run of newlines; any piece will do
    m = client.messages.create(messages=USER, thinking=OFF, stop_sequences=[stop], **{**KW, "max_tokens": 20})
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop and stop not in m.content[0].text


def test_stream_event_order_and_accumulated_message(client):
    whole = client.messages.create(messages=USER, **KW)  # all thinking: the reply is cut at 10 tokens
    assert [b.type for b in whole.content] == ["thinking", "text"] and whole.content[1].text == ""
    kinds = [e.type for e in client.messages.create(messages=USER, stream=True, **KW)]
    runs = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert runs == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                    "content_block_start", "content_block_stop", "message_delta", "message_stop"]  # no pings
    with client.messages.stream(messages=USER, **KW) as stream:
        final = stream.get_final_message()
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in whole.content]
    assert final.stop_reason == whole.stop_reason == "max_tokens"
    assert final.usage.output_tokens == whole.usage.output_tokens == 10


def test_raw_stream_text(client, server):
    body = {"model": "thinker", "max_tokens": 10, "temperature": 0, "messages": USER, "stream": True}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("event: ")]
    names = [line[7:] for line in lines]
    assert names[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"] and names.count("ping") == 1


def test_count_tokens(client):
    m = client.messages.create(messages=USER, thinking=OFF, **KW)
    assert client.messages.count_tokens(model="thinker", messages=USER, thinking=OFF).input_tokens == \
        m.usage.input_tokens


def test_errors_in_anthropic_shape(client, server):
    with pytest.raises(anthropic.BadRequestError) as info:
        server_tool = {"type": "web_search_20250305", "name": "web_search"}
        client.messages.create(messages=USER, tools=[server_tool], **KW)
    assert info.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": (
        "tools.0.type: 'web_search_20250305' tools are not served, only function tools")}}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}], **KW)
    assert info.value.body["error"]["message"].startswith("messages.0.content.0: this model serves text only")
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(messages=USER, **{**KW, "model": "nope"})
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
        wrong.messages.create(messages=USER, **KW)
    r = httpx.post(server.url + "/v1/messages", json={"model": "thinker", "messages": USER},
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
