"""Tools on the serving routes: what a request's `tools`/`tool_choice` mean for the prompt, the
constraint and the reply, and the reply's calls in OpenAI's and Ollama's shapes.

- `auto`: tools are rendered, the reply is parsed by the template format's parser.
- `required` / a named function: the reply is forced into calls by a grammar (engine constraint).
- `none`: tools are rendered (as vLLM does) and the reply is not parsed.
A template without a tool format is a 400 saying so; nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunelab.engine.structured import StructuredOutputsParams
from tunelab.errors import InvalidRequest
from tunelab.tools.formats import ToolFormat, get_format
from tunelab.tools.grammar import forced_call
from tunelab.tools.parser import ParsedDelta, ToolCall, ToolCallParser


@dataclass
class ToolPlan:
    """How one request uses tools."""

    tools: list[dict] = field(default_factory=list)  # as the chat template takes them
    fmt: ToolFormat | None = None  # set when replies are parsed for calls
    max_calls: int | None = None  # 1 when parallel_tool_calls is false
    constraint: StructuredOutputsParams | None = None  # forced calls

    def parser(self) -> ToolCallParser | None:
        """A fresh parser for one choice, or None when replies are not parsed."""
        return ToolCallParser(self.fmt, self.max_calls) if self.fmt is not None else None


def plan_tools(tools: list[dict], choice: Any, parallel: bool | None, template: Any,
               can_constrain: bool, backend: str) -> ToolPlan:
    """Check `tools`/`tool_choice` against the template and backend; 400s name the field."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools; send `tools` or drop tool_choice", param="tool_choice")
        return ToolPlan()
    name = getattr(template, "tool_format", None)
    if name is None:
        raise InvalidRequest(f"the chat template '{getattr(template, 'name', '?')}' of this model has no tool-call "
                             "format, so it cannot be given tools; serve it with a chat template that has one "
                             "(chatml, llama3, mistral, gemma)", param="tools")
    fmt, max_calls = get_format(name), (1 if parallel is False else None)
    if choice == "none":
        return ToolPlan(tools)
    if choice in (None, "auto"):
        return ToolPlan(tools, fmt, max_calls)
    if not can_constrain:
        raise InvalidRequest(f"tool_choice '{_choice_text(choice)}' forces a call by constrained decoding, which "
                             f"the {backend} backend does not do; use tool_choice 'auto'", param="tool_choice")
    forced = tools if choice == "required" else _named(tools, choice.function.name)
    parallel_ok = choice == "required" and parallel is not False
    return ToolPlan(tools, fmt, max_calls, forced_call(fmt, forced, parallel_ok, "tool_choice"))


def _named(tools: list[dict], name: str) -> list[dict]:
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        known = ", ".join(t["function"]["name"] for t in tools)
        raise InvalidRequest(f"tool_choice names function '{name}', which is not in tools ({known})",
                             param="tool_choice.function.name")
    return chosen


def _choice_text(choice: Any) -> str:
    return choice if isinstance(choice, str) else f"function {choice.function.name}"


def tool_step(parser: ToolCallParser | None, text: str, final: bool) -> tuple[str, list[dict]]:
    """One streamed piece of a choice -> (content, OpenAI tool-call deltas); `final` flushes."""
    if parser is None:
        return text, []
    parsed = parser.step(text, final)
    return parsed.content, openai_deltas(parsed)


def finish_reason(reason: str | None, calls: list[ToolCall]) -> str | None:
    """OpenAI's reason: `tool_calls` when a reply that ended by itself made calls."""
    return "tool_calls" if calls and reason == "stop" else reason


def openai_deltas(parsed: ParsedDelta) -> list[dict]:
    """Streamed `delta.tool_calls` entries: id, type and name first, then argument pieces."""
    out = []
    for c in parsed.calls:
        entry: dict[str, Any] = {"index": c.index, "function": {"arguments": c.arguments}}
        if c.name is not None:
            entry = {"index": c.index, "id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments}}
        out.append(entry)
    return out


def ollama_calls(calls: list[ToolCall]) -> list[dict]:
    """Ollama's `message.tool_calls`: arguments as an object (as written when not JSON)."""
    out = []
    for i, c in enumerate(calls):
        try:
            args = json.loads(c.arguments or "{}")
        except ValueError:
            args = c.arguments
        out.append({"function": {"index": i, "name": c.name, "arguments": args}})
    return out
