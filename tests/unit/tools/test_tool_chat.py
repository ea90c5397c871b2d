"""`tunelab chat --tools`: a call is shown and kept in the conversation; /result answers it."""

from __future__ import annotations

from tunelab.commands.chat import Chat
from tunelab.engine import SamplingParams
from tunelab.engine.engine import LLMEngine
from tunelab.engine.config import EngineConfig
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.tools import get_format
from tunelab.tools.grammar import tool_call_grammar

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 6}}, "required": ["city"],
    "additionalProperties": False}}}]


def test_chat_shows_calls_and_answers_them(tiny_models, capsys) -> None:
    engine = LLMEngine(tiny_models["qwen2"], None, EngineConfig(dtype="fp32", max_model_len=1024))
    forced = StructuredOutputsParams(grammar=tool_call_grammar(get_format("hermes"), TOOLS, parallel=False))
    chat = Chat(engine, SamplingParams(max_tokens=120, seed=1, structured_outputs=forced), None, None, "tiny", TOOLS)
    chat.reply("weather in Oslo?")
    turn = chat.messages[-1]
    assert turn["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "[tool call] get_weather(" in capsys.readouterr().out
    chat.params = SamplingParams(max_tokens=3, seed=1)
    chat.result("18C")
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "tool", "assistant"]
    assert chat.messages[2] == {"role": "tool", "tool_call_id": turn["tool_calls"][0]["id"], "content": "18C"}
    chat.result("again")
    assert "no tool call is waiting" in capsys.readouterr().out
