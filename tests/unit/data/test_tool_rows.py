"""Tool-calling training rows: OpenAI and LLaMA-Factory formats, call checks, loss on calls only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunelab.data.config import DataConfig
from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets
from tunelab.data.templates import ChatTemplate
from tunelab.data.tokenize import tokenize_row

TOKENIZER = Path(__file__).parents[2] / "assets" / "tiny_tokenizer"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


def _openai_row(calls: list[dict] | None = None, tools: list[dict] | None = TOOLS) -> dict:
    calls = calls or [{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                      {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    messages = [{"role": "user", "content": "Weather and time in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "a", "content": "RESULT_ONE"},
                {"role": "tool", "tool_call_id": "b", "content": "RESULT_TWO"},
                {"role": "assistant", "content": "Cold, and it is noon."}]
    return {"messages": messages, **({"tools": tools} if tools is not None else {})}


def _write(tmp_path: Path, rows: list[dict], name: str = "tools.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_openai_rows_keep_tools_calls_and_results(tmp_path) -> None:
    (row,) = read_datasets([_write(tmp_path, [_openai_row()])]).rows
    assert [t["function"]["name"] for t in row.tools] == ["get_weather", "get_time"]
    assert [c["function"]["arguments"] for c in row.messages[1]["tool_calls"]] == ['{"city": "Oslo"}', "{}"]
    assert [m["role"] for m in row.messages] == ["user", "assistant", "tool", "tool", "assistant"]


def test_llamafactory_sharegpt_tool_rows(tmp_path) -> None:
    tools = json.dumps([{"name": "get_weather", "description": "w", "parameters": WEATHER}])
    turns = [{"from": "human", "value": "Oslo?"},
             {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})},
             {"from": "observation", "value": "RESULT_ONE"}, {"from": "gpt", "value": "Cold."}]
    (row,) = read_datasets([_write(tmp_path, [{"conversations": turns, "tools": tools}])]).rows
    assert row.tools[0] == {"type": "function", "function": {"name": "get_weather", "description": "w",
                                                             "parameters": WEATHER}}
    call = row.messages[1]["tool_calls"][0]["function"]
    assert row.messages[1]["role"] == "assistant" and json.loads(call["arguments"]) == {"city": "Oslo"}
    assert row.messages[2] == {"role": "tool", "content": "RESULT_ONE"}


@pytest.mark.parametrize("family", ["chatml", "llama3", "gemma", "mistral"])
def test_loss_covers_calls_and_replies_not_tool_results(tmp_path, family: str) -> None:
    (row,) = read_datasets([_write(tmp_path, [_openai_row()])]).rows
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    example = tokenize_row(row, ChatTemplate.builtin(family, "", tokenizer.eos_token), tokenizer,
                           DataConfig(cutoff_len=4096))
    trained = tokenizer.decode([t for t, lab in zip(example.input_ids, example.labels) if lab != -100])
    assert "get_weather" in trained and "Oslo" in trained and "Cold, and it is noon." in trained
    assert "RESULT_ONE" not in trained and "RESULT_TWO" not in trained and "Weather and time" not in trained
    assert "RESULT_ONE" in tokenizer.decode(example.input_ids)


@pytest.mark.parametrize("calls, field, message", [
    ([{"id": "a", "type": "function", "function": {"name": "get_wether", "arguments": "{}"}}],
     "messages[1].tool_calls[0].function.name", "not among the row's tools"),
    ([{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": '}}],
     "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    ([{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"town": "Oslo"}'}}],
     "messages[1].tool_calls[0].function.arguments", "do not match its parameters"),
    ([{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}}],
     "messages[1].tool_calls[0].function.arguments", "must be a JSON object"),
])
def test_bad_calls_name_file_line_and_field(tmp_path, calls: list, field: str, message: str) -> None:
    path = _write(tmp_path, [_openai_row(), _openai_row(calls)])
    with pytest.raises(DataError) as err:
        read_datasets([path])
    assert str(err.value).startswith(f"{path}:2: field '{field}'") and message in str(err.value)
    loaded = read_datasets([path], skip_invalid=True)  # what `tunelab data check` reports
    assert len(loaded.rows) == 1 and sum(len(v) for v in loaded.rejected.values()) == 1


def test_tool_results_must_follow_calls(tmp_path) -> None:
    row = _openai_row()
    row["messages"] = [row["messages"][0], {"role": "tool", "content": "x"}, row["messages"][-1]]
    with pytest.raises(DataError, match="turn 1 is 'tool' but 'assistant' was expected"):
        read_datasets([_write(tmp_path, [row])])
