"""Tools and structured outputs through a real server on a tiny model, with the official clients."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from ollama import Client
from openai import AsyncOpenAI, OpenAI

from serve_util import start_server

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                            "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
ASK = [{"role": "user", "content": "weather in Paris?"}]
REPLY = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "score": {"type": "integer",
         "minimum": 0, "maximum": 9}}, "required": ["answer", "score"], "additionalProperties": False}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["qwen2"], served_name="tiny")  # the tiny tokenizer's ChatML: hermes calls
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def _check_call(name: str, arguments: str) -> None:
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER)


def test_forced_named_call_whole(client) -> None:
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=NAMED,
                                       max_tokens=200, seed=3)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    _check_call(call.function.name, call.function.arguments)


def test_forced_call_streamed_id_and_name_first_then_arguments(client) -> None:
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=NAMED,
                                                 max_tokens=200, seed=3, stream=True))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert all(d.id is None and d.function.name is None for d in deltas[1:]), "id and name come once"
    assert len(deltas) > 2, "arguments arrive in pieces"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    _check_call("get_weather", arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=NAMED,
                                           max_tokens=200, seed=3)
    assert whole.choices[0].message.tool_calls[0].function.arguments == arguments


def test_required_without_parallel_calls_makes_one_call(client) -> None:
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=200, seed=1)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time")
    json.loads(calls[0].function.arguments)


def test_multi_turn_with_calls_and_results_is_served(client) -> None:
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"}]
    r = client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_json_schema_replies_validate_for_20_seeds(server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": REPLY, "strict": True}}

    async def one(aclient: AsyncOpenAI, seed: int) -> str:
        r = await aclient.chat.completions.create(model="tiny", messages=ASK, response_format=fmt, seed=seed,
                                                  max_tokens=60)
        return r.choices[0].message.content

    async def run() -> list[str]:
        aclient = AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        return await asyncio.gather(*(one(aclient, s) for s in range(20)))

    for text in asyncio.run(run()):
        jsonschema.validate(json.loads(text), REPLY)


def test_mixed_batch_equals_alone(server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": REPLY}}
    kinds = [dict(response_format=fmt), dict(), dict(tools=TOOLS, tool_choice=NAMED), dict(tools=TOOLS)]

    async def one(aclient: AsyncOpenAI, kw: dict):
        r = await aclient.chat.completions.create(model="tiny", messages=ASK, max_tokens=40, temperature=0, **kw)
        return r.choices[0].message.model_dump()

    async def run(together: bool) -> list:
        aclient = AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        if together:
            return await asyncio.gather(*(one(aclient, kw) for kw in kinds))
        return [await one(aclient, kw) for kw in kinds]

    strip_ids = lambda msgs: json.dumps(msgs).replace('"id": "call_', '"id": "').split('"id": "')[0]
    together, alone = asyncio.run(run(True)), asyncio.run(run(False))
    assert [m["content"] for m in together] == [m["content"] for m in alone]
    assert strip_ids(together) == strip_ids(alone)


@pytest.mark.parametrize("body, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format.json_schema.schema"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tool_and_format_requests_are_400s_naming_the_field(server, body: dict, param: str) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": ASK, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_template_without_tool_format_is_a_400_saying_so(tiny_models) -> None:
    srv = start_server(tiny_models["qwen2"], served_name="tiny", chat_template="default")
    try:
        r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "tiny", "messages": ASK, "tools": TOOLS})
        assert r.status_code == 400 and "no tool-call format" in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "tools"
    finally:
        srv.stop()


def test_ollama_tools_and_format(tiny_models) -> None:
    """Llama 3.1's format writes a call as bare JSON, so Ollama's `format` can force one through /api/chat."""
    srv = start_server(tiny_models["qwen2"], served_name="tiny", chat_template="llama3")
    try:
        client = Client(host=srv.url)
        assert "tools" in client.show("tiny").capabilities
        call = {"type": "object", "properties": {"name": {"const": "get_weather"}, "parameters": WEATHER},
                "required": ["name", "parameters"], "additionalProperties": False}
        r = client.chat(model="tiny", messages=ASK, tools=TOOLS[:1], format=call, options={"num_predict": 100, "seed": 2})
        (tc,) = r.message.tool_calls
        assert tc.function.name == "get_weather"
        jsonschema.validate(dict(tc.function.arguments), WEATHER)
        streamed = [p for p in client.chat(model="tiny", messages=ASK, tools=TOOLS[:1], format=call, stream=True,
                                           options={"num_predict": 100, "seed": 2}) if p.message.tool_calls]
        assert [p.message.tool_calls[0].function.arguments for p in streamed] == [tc.function.arguments]
        plain = client.chat(model="tiny", messages=ASK, format=REPLY, options={"num_predict": 60, "seed": 4})
        jsonschema.validate(json.loads(plain.message.content), REPLY)
        history = ASK + [{"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
            {"role": "tool", "content": "18C", "tool_name": "get_weather"}]
        assert client.chat(model="tiny", messages=history, tools=TOOLS[:1], options={"num_predict": 4}).done
    finally:
        srv.stop()


def test_vllm_guided_extras_on_completions(client) -> None:
    r = client.completions.create(model="tiny", prompt="pick one", max_tokens=20, seed=5,
                                  extra_body={"guided_choice": ["red", "blue"]})
    assert r.choices[0].text in ("red", "blue")
    r = client.completions.create(model="tiny", prompt="pick one", max_tokens=20, extra_body={"guided_regex": "[0-9]{3}"})
    assert len(r.choices[0].text) == 3 and r.choices[0].text.isdigit()
