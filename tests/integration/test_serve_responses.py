"""OpenAI's Responses API with the official client: whole and streamed, thinking, items, refusals."""

from __future__ import annotations

import shutil

import pytest
from openai import BadRequestError, OpenAI

from serve_util import start_server
from test_serve_reasoning import QWEN3_STYLE

KW = dict(model="thinker", max_output_tokens=10, temperature=0)
WHY = [{"role": "user", "content": "why?"}]
OFF = {"effort": "none"}  # the template closes an empty think block: the output is all answer


@pytest.fixture(scope="module")
def client(tiny_models, tmp_path_factory):
    model = tmp_path_factory.mktemp("thinker") / "thinker"
    shutil.copytree(tiny_models["qwen2"], model)
    (model / "chat_template.jinja").write_text(QWEN3_STYLE)
    srv = start_server(model, served_name="thinker", dtype="float32")
    yield OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    srv.stop()


def _chat(client, messages, thinking: bool):
    return client.chat.completions.create(
        model="thinker", messages=messages, max_tokens=10, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": thinking}}).choices[0].message


def test_answer_equals_chat_completions(client):
    r = client.responses.create(input="why?", instructions="be brief", reasoning=OFF, **KW)
    chat = _chat(client, [{"role": "system", "content": "be brief"}, *WHY], False)
    assert r.object == "response" and r.model == "thinker" and [o.type for o in r.output] == ["message"]
    assert r.output_text == chat.content and r.output[0].content[0].type == "output_text"
    assert r.usage.output_tokens <= 10 and r.usage.input_tokens > 0
    assert r.status == ("incomplete" if r.usage.output_tokens == 10 else "completed")
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"


def test_thinking_comes_back_as_a_reasoning_item(client):
    r = client.responses.create(input="why?", **KW)
    chat = _chat(client, [{"role": "user", "content": "why?"}], True)
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == chat.model_extra["reasoning_content"] and r.output[0].summary == []
    summarised = client.responses.create(input="why?", reasoning={"summary": "auto"}, **KW)
    assert summarised.output[0].summary[0].text == r.output[0].content[0].text
    assert r.usage.output_tokens_details.reasoning_tokens > 0


def test_input_items_roles_and_parts(client):
    items = [{"role": "developer", "content": "be brief"},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
             {"role": "user", "content": "why?"}]
    r = client.responses.create(input=items, reasoning=OFF, **KW)
    chat = _chat(client, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}, *WHY], False)
    assert r.output_text == chat.content


def test_earlier_output_items_are_sent_back_as_context(client):
    first = client.responses.create(input="why?", **KW)  # a reasoning item and a message
    follow_up = [*first.output, {"role": "user", "content": "and?"}]
    r = client.responses.create(input=follow_up, reasoning=OFF, **KW)
    chat = _chat(client, [*WHY, {"role": "assistant", "content": first.output_text},
                          {"role": "user", "content": "and?"}], False)
    assert r.output_text == chat.content


def _kinds(events) -> list[str]:
    kinds = []
    for e in events:
        if not kinds or kinds[-1] != e.type or not e.type.endswith(".delta"):
            kinds.append(e.type)  # runs of deltas counted once
    return kinds


def test_stream_event_sequence_and_final_response(client):
    whole = client.responses.create(input="why?", **KW)
    events = list(client.responses.create(input="why?", stream=True, **KW))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = "response.incomplete" if whole.status == "incomplete" else "response.completed"
    assert _kinds(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", final]
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert streamed == whole.output[0].content[0].text
    assert events[-1].response.output[0].content[0].text == streamed
    assert events[0].response.status == "in_progress"


def test_stream_answer_and_summary_events(client):
    events = list(client.responses.create(input="why?", reasoning={"summary": "auto"}, stream=True, **KW))
    kinds = _kinds(events)
    assert {"response.reasoning_summary_part.added", "response.reasoning_summary_text.done"} <= set(kinds)
    plain = list(client.responses.create(input="why?", reasoning=OFF, stream=True, **KW))
    text = "".join(e.delta for e in plain if e.type == "response.output_text.delta")
    assert _kinds(plain)[2:5] == ["response.output_item.added", "response.content_part.added",
                                  "response.output_text.delta"]
    assert text == client.responses.create(input="why?", reasoning=OFF, **KW).output_text


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x", "detail": "auto"}]}]},
     "input.0.content.0"),  # this model is text only
    ({"input": [{"type": "computer_call_output", "call_id": "c", "output": "x"}]}, "input.0.type"),
    ({"max_output_tokens": 5000}, "max_output_tokens"),
])
def test_what_is_not_served_is_a_400_naming_the_field(client, extra, param):
    with pytest.raises(BadRequestError) as info:
        client.responses.create(**{**KW, "input": "why?", **extra})
    assert info.value.body["param"] == param, info.value.body
