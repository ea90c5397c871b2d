"""Function tools and structured output on the Responses and Anthropic APIs, through the one tool
machinery (the same prompt and parser as chat completions), with the official clients."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai import OpenAI

from serve_util import openai_error, start_server
from test_serve_tools import REPLY, TOOLS, WEATHER

anthropic = pytest.importorskip("anthropic", reason="the anthropic client is not installed")
ASK = "weather in Paris?"
R_TOOLS = [{"type": "function", **t["function"]} for t in TOOLS]  # Responses: flat function tools
A_TOOLS = [{"name": f["name"], "input_schema": f["parameters"], **({"description": f["description"]}
                                                                   if "description" in f else {})}
           for f in (t["function"] for t in TOOLS)]


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["qwen2"], served_name="tiny", dtype="float32")  # ChatML: hermes calls
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def test_responses_forced_call_whole_and_streamed(oai):
    kw = dict(model="tiny", input=ASK, tools=R_TOOLS, tool_choice={"type": "function", "name": "get_weather"},
              max_output_tokens=200)
    r = oai.responses.create(**kw)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    events = list(oai.responses.create(stream=True, **kw))
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert len(pieces) > 1 and "".join(pieces) == done.arguments and done.name == "get_weather"
    final = events[-1].response.output[-1]
    assert final.type == "function_call" and final.arguments == done.arguments


def test_responses_call_and_result_render_as_chat_completions(oai):
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather",
            "arguments": json.dumps({"city": "Paris", "unit": "c"})}
    items = [{"role": "user", "content": ASK}, call,
             {"type": "function_call_output", "call_id": "call_1", "output": "21 C"}]
    r = oai.responses.create(model="tiny", input=items, tools=R_TOOLS, max_output_tokens=8, temperature=0)
    messages = [{"role": "user", "content": ASK},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": call["arguments"]}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}]
    chat = oai.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, max_tokens=8,
                                       temperature=0)
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.output_text == (chat.choices[0].message.content or "")


def test_responses_text_format_json_schema(oai):
    fmt = {"type": "json_schema", "name": "reply", "schema": REPLY, "strict": True}
    r = oai.responses.create(model="tiny", input="ok?", text={"format": fmt}, max_output_tokens=60)
    jsonschema.validate(json.loads(r.output_text), REPLY)


def test_anthropic_forced_tool_use_whole_and_streamed(claude):
    kw = dict(model="tiny", max_tokens=200, messages=[{"role": "user", "content": ASK}], tools=A_TOOLS,
              tool_choice={"type": "tool", "name": "get_weather"})
    m = claude.messages.create(**kw)
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER)
    with claude.messages.stream(**kw) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's own event for input_json_delta pieces
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    jsonschema.validate(streamed.input, WEATHER)
    assert final.stop_reason == "tool_use"


def test_anthropic_tool_result_renders_as_chat_completions(claude, oai):
    args = {"city": "Paris", "unit": "c"}
    messages = [{"role": "user", "content": ASK},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                                   "input": args}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                              "content": "21 C"}]}]
    count = claude.messages.count_tokens(model="tiny", messages=messages, tools=A_TOOLS).input_tokens
    chat = oai.chat.completions.create(model="tiny", tools=TOOLS, max_tokens=1, messages=[
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}])
    assert count == chat.usage.prompt_tokens


def test_tool_and_tool_choice_keys_that_are_not_read_are_400s(claude, oai):
    def anthropic_error(**kw) -> str:
        with pytest.raises(anthropic.BadRequestError) as info:
            claude.messages.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": ASK}], **kw)
        return info.value.body["error"]["message"]

    extra_tool = [{**A_TOOLS[0], "input_examples": [{"city": "Paris"}]}, *A_TOOLS[1:]]
    assert anthropic_error(tools=extra_tool).startswith("tools.0.input_examples: not a supported field")
    assert "tool_choice.reason" in anthropic_error(tools=A_TOOLS, tool_choice={"type": "auto", "reason": "x"})
    error = openai_error(lambda: oai.responses.create(model="tiny", input=ASK, max_output_tokens=2,
                                                      tools=[{**R_TOOLS[0], "defer_loading": True}]))
    assert error["param"] == "tools.0.defer_loading" and "not a supported field" in error["message"]
    error = openai_error(lambda: oai.responses.create(
        model="tiny", input=ASK, max_output_tokens=2, tools=R_TOOLS,
        tool_choice={"type": "function", "name": "get_weather", "mode": "x"}))
    assert error["param"] == "tool_choice.mode"
    # the keys that are read still work, cache_control included
    cached = [{**A_TOOLS[0], "cache_control": {"type": "ephemeral"}}, *A_TOOLS[1:]]
    reply = claude.messages.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": ASK}],
                                   tools=cached, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert reply.stop_reason in ("max_tokens", "end_turn", "tool_use")
