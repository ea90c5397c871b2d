"""The tool-call parser on fixed model outputs per format: whole, streamed in pieces, malformed, cut off."""

from __future__ import annotations

import json

import pytest

from tunelab.tools import ToolCallParser, get_format, parse_tool_calls

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'

# format -> a reply with text before two parallel calls, as the model writes it
TWO_CALLS = {
    "hermes": f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n</tool_call>",
    "llama3_json": WEATHER.replace('"arguments"', '"parameters"') + "; " + TIME.replace('"arguments"', '"parameters"'),
    "mistral": f"[TOOL_CALLS] [{WEATHER[:-1]}, \"id\": \"abc123xyz\"}}, {TIME}]",
    "gemma": f"Let me check.\n```tool_call\n{WEATHER}\n```\n```tool_call\n{TIME}\n```",
}


def _stream(fmt_name: str, text: str, size: int, max_calls: int | None = None):
    """Feed `text` in pieces of `size` chars; return content, calls and per-call joined argument pieces."""
    parser = ToolCallParser(get_format(fmt_name), max_calls)
    content, names, pieces = "", {}, {}
    deltas = [parser.feed(text[i:i + size]) for i in range(0, len(text), size)] + [parser.finish()]
    for d in deltas:
        content += d.content
        for c in d.calls:
            if c.name is not None:
                assert c.index not in names and c.id, "id and name come once, first"
                names[c.index] = c.name
            assert c.index in names, "arguments never come before the name"
            pieces[c.index] = pieces.get(c.index, "") + c.arguments
    return content, parser.calls, names, pieces


@pytest.mark.parametrize("fmt", list(TWO_CALLS))
@pytest.mark.parametrize("size", [1, 3, 7, 10_000])
def test_parallel_calls_whole_and_streamed(fmt: str, size: int) -> None:
    content, calls, names, pieces = _stream(fmt, TWO_CALLS[fmt], size)
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(calls[0].arguments) == {"city": "Paris", "unit": "c"}
    assert json.loads(calls[1].arguments) == {"tz": "UTC"}
    assert all(c.complete for c in calls)
    assert [pieces[i] for i in range(2)] == [c.arguments for c in calls], "pieces join to the arguments"
    assert content.strip() == ("" if fmt in ("llama3_json", "mistral") else "Let me check.")
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("fmt", list(TWO_CALLS))
def test_plain_reply_is_content(fmt: str) -> None:
    text = "The weather in Paris is mild <tool and [TOOL] ``` fine."
    assert parse_tool_calls(get_format(fmt), text) == (text, [])
    content, calls, _, _ = _stream(fmt, text, 2)
    assert (content, calls) == (text, [])


@pytest.mark.parametrize("text", [
    "<tool_call>\nnot json at all\n</tool_call>",  # no JSON object
    '<tool_call>\n{"city": "Paris"}\n</tool_call>',  # JSON without a name
    '<tool_call>\n{"na',  # cut off before the name
])
def test_malformed_hermes_region_becomes_content(text: str) -> None:
    for size in (1, 4, 1000):
        content, calls, _, _ = _stream("hermes", text, size)
        assert calls == [] and content == text


def test_cut_off_call_keeps_what_was_written() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    content, calls, names, pieces = _stream("hermes", text, 5)
    assert content == "" and names == {0: "get_weather"}
    assert calls[0].arguments == '{"city": "Par' == pieces[0]
    assert not calls[0].complete


def test_bad_json_after_the_name_stays_a_call() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1,}}\n</tool_call>'
    _, calls = parse_tool_calls(get_format("hermes"), text)
    assert calls[0].name == "f" and calls[0].arguments == '{"a": 1,}'  # as written, as OpenAI's can be


def test_text_after_calls_is_content() -> None:
    content, calls = parse_tool_calls(get_format("gemma"), f"```tool_call\n{TIME}\n```\nDone.")
    assert [c.name for c in calls] == ["get_time"] and content.strip() == "Done."


def test_max_calls_drops_extra_calls() -> None:
    content, calls, _, _ = _stream("hermes", TWO_CALLS["hermes"], 4, max_calls=1)
    assert [c.name for c in calls] == ["get_weather"] and content == "Let me check.\n"


def test_name_after_arguments_and_string_arguments() -> None:
    late = '<tool_call>\n{"arguments": {"x": 2}, "name": "f"}\n</tool_call>'
    _, calls, names, pieces = _stream("hermes", late, 3)
    assert names == {0: "f"} and json.loads(calls[0].arguments) == {"x": 2} == json.loads(pieces[0])
    quoted = '<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 2}"}\n</tool_call>'
    _, calls = parse_tool_calls(get_format("hermes"), quoted)
    assert calls[0].arguments == '{"x": 2}'


def test_llama3_only_a_reply_that_starts_with_json_is_a_call() -> None:
    fmt = get_format("llama3_json")
    assert parse_tool_calls(fmt, 'Use {"name": "f"} like this.')[1] == []
    content, calls = parse_tool_calls(fmt, '  <|python_tag|>{"name": "f", "parameters": {}}')
    assert [c.name for c in calls] == ["f"] and calls[0].arguments == "{}"
    assert parse_tool_calls(fmt, '\n{"name": "f", "parameters": {"a": "}"}}')[1][0].arguments == '{"a": "}"}'


def test_braces_and_quotes_inside_strings() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {"s": "a } \\" { ]"}}\n</tool_call>'
    for size in (1, 2, 100):
        _, calls, _, pieces = _stream("hermes", text, size)
        assert json.loads(calls[0].arguments) == {"s": 'a } " { ]'} and pieces[0] == calls[0].arguments
