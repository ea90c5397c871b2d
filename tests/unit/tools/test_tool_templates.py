"""The one ChatTemplate renders tool conversations: natively (a model's jinja with `tools=`) or
through its family's built-in format; what it renders, the format's parser reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.data.errors import TemplateError
from tunelab.data.templates import ChatTemplate, TokenizerInfo
from tunelab.tools import get_format, parse_tool_calls

ASSETS = Path(__file__).parents[2] / "assets" / "templates"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
CALLS = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
         {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    {"role": "assistant", "content": "18C and sunny; it is noon."},
    {"role": "user", "content": "And London?"},
]
FAMILY_FORMAT = {"chatml": "hermes", "llama3": "llama3_json", "mistral": "mistral", "gemma": "gemma"}


def _qwen() -> ChatTemplate:
    info = TokenizerInfo(None, "", "<|im_end|>", ["<|im_start|>", "<|im_end|>"], "qwen2")
    return ChatTemplate.from_source("tokenizer", (ASSETS / "qwen2_5_tools.jinja").read_text(), info)


@pytest.mark.parametrize("family", list(FAMILY_FORMAT))
def test_builtin_renders_tools_calls_and_results(family: str) -> None:
    template = ChatTemplate.builtin(family, "<s>", "</s>")
    assert template.tool_format == FAMILY_FORMAT[family]
    fmt = get_format(template.tool_format)
    text = template.render(CONVERSATION, add_generation_prompt=True, tools=TOOLS)
    assert '"get_weather"' in text and "Weather in a city" in text, "the tools are described"
    calls_text = fmt.render_calls([{"id": c["id"], **c["function"]} for c in CALLS])
    assert calls_text in text, "the assistant's calls are written in the format"
    assert "18C, sunny" in text and "12:00" in text and text.index("18C, sunny") < text.index("noon")
    content, parsed = parse_tool_calls(fmt, calls_text)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in parsed] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_plain_conversations_render_as_before() -> None:
    template = ChatTemplate.builtin("chatml")
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert template.render(plain, tools=None) == template.render(plain) == template.render(plain, tools=[])


def test_template_without_tool_format_is_an_error_that_says_so() -> None:
    template = ChatTemplate.builtin("default", "<s>", "</s>")
    assert template.tool_format is None
    with pytest.raises(TemplateError, match="has no tool-call format"):
        template.render(CONVERSATION[:2], tools=TOOLS)
    with pytest.raises(TemplateError, match="has no tool-call format"):
        template.render(CONVERSATION)


def test_native_template_gets_tools_and_matches_the_chatml_lowering() -> None:
    """Qwen 2.5's own template renders tools itself; the chatml built-in lowers them to the same text."""
    qwen = _qwen()
    assert qwen.tool_format == "hermes"
    native = qwen.render(CONVERSATION, add_generation_prompt=True, tools=TOOLS)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in native
    assert "<|im_start|>user\n<tool_response>\n18C, sunny\n</tool_response>\n<tool_response>" in native
    assert ChatTemplate.builtin("chatml").render(CONVERSATION, add_generation_prompt=True, tools=TOOLS) == native


def test_tool_turn_prefixes_extend_each_other() -> None:
    """Loss masks render prefixes: each prefix of a tool conversation is a prefix of the whole."""
    for family in FAMILY_FORMAT:
        template = ChatTemplate.builtin(family, "<s>", "</s>")
        whole = template.render(CONVERSATION[:6], tools=TOOLS)
        for n in (3, 6):
            assert whole.startswith(template.render(CONVERSATION[:n], tools=TOOLS)), (family, n)
