"""How each model family writes tool definitions, tool calls and tool results as text.

A template either handles tools in its own jinja (a model's HF template with `tools=`:
Qwen 2.5+, Llama 3.1+, Mistral) or gets them *lowered* into plain turns by its family's
format here, so every template of a supported family renders tool conversations the same
way for training, serving and export. The formats:

- `hermes` (Qwen, ChatML, NousResearch Hermes): tools listed in `<tools></tools>` in the
  system turn; each call `<tool_call>\\n{"name": .., "arguments": {..}}\\n</tool_call>`; results
  in a user turn as `<tool_response>\\n..\\n</tool_response>` (consecutive results share a turn).
- `llama3_json` (Llama 3.1+): the call is the reply, `{"name": .., "parameters": {..}}`
  (parallel calls one per line); results in `ipython` turns.
- `mistral`: `[TOOL_CALLS] [{"name": .., "arguments": {..}, "id": ..}, ..]`; results as
  `[TOOL_RESULTS] {"content": .., "call_id": ..}[/TOOL_RESULTS]` in a user turn.
- `gemma` (Gemma has no tool role; this is tunelab's documented convention, JSON in fenced
  blocks as Google's function-calling guide suggests): each call is a ```` ```tool_call ````
  block holding `{"name": .., "arguments": {..}}`; results are ```` ```tool_output ```` blocks
  in a user turn.

The parser (`tools.parser`) reads calls back through the same facts: the markers that open
the calls region, the text skipped between calls and the key holding the arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunelab.errors import TunelabError


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _args(arguments: str) -> Any:
    """A call's JSON-string arguments as a value (left as the string when not JSON)."""
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


@dataclass(frozen=True)
class ToolFormat:
    """The text conventions of one tool-call format (see the module docstring)."""

    name: str
    starts: tuple[str, ...]  # a call region opens at any of these (or at `{` if json_start)
    skips: tuple[str, ...]  # text between calls inside the region
    args_key: str = "arguments"
    json_start: bool = False  # a reply that starts with `{` is a call (Llama 3.1)
    native_markers: tuple[str, ...] = ()  # a jinja source with `tools` and one of these is native
    result_role: str = "user"
    merge_results: bool = True  # consecutive tool results share one turn

    def describe(self, tools: list[dict]) -> str:
        """The text that tells the model which functions it may call (goes in the system turn)."""
        raise NotImplementedError

    def render_calls(self, calls: list[dict]) -> str:
        """Assistant text for `calls` ({id, name, arguments: JSON string} dicts)."""
        raise NotImplementedError

    def render_results(self, results: list[dict]) -> str:
        """Turn text for consecutive tool results ({content, tool_call_id, name} dicts)."""
        return "\n".join(self.render_result(r) for r in results)

    def render_result(self, result: dict) -> str:
        """Text of one tool result."""
        raise NotImplementedError

    def call_grammar_parts(self) -> tuple[str, str, str]:
        """(before the first call, between calls, after the last) for constrained decoding."""
        raise NotImplementedError


class HermesFormat(ToolFormat):
    """Qwen / Hermes `<tool_call>` JSON."""

    def describe(self, tools: list[dict]) -> str:
        listed = "\n".join(_dumps(t) for t in tools)
        return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n"
                f"<tools>\n{listed}\n</tools>\n\nFor each function call, return a json object with "
                "function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')

    def render_calls(self, calls: list[dict]) -> str:
        return "\n".join(f'<tool_call>\n{_dumps({"name": c["name"], "arguments": _args(c["arguments"])})}'
                         f"\n</tool_call>" for c in calls)

    def render_result(self, result: dict) -> str:
        return f"<tool_response>\n{result['content']}\n</tool_response>"

    def call_grammar_parts(self) -> tuple[str, str, str]:
        return "<tool_call>\n", "\n</tool_call>\n<tool_call>\n", "\n</tool_call>"


class Llama3JsonFormat(ToolFormat):
    """Llama 3.1+ JSON calls: the reply is `{"name": .., "parameters": {..}}`."""

    def describe(self, tools: list[dict]) -> str:
        listed = "\n\n".join(json.dumps(t, indent=4, ensure_ascii=False) for t in tools)
        return ("Given the following functions, please respond with a JSON for a function call with its "
                "proper arguments that best answers the given prompt.\n\nRespond in the format "
                '{"name": function name, "parameters": dictionary of argument name and its value}. '
                f"Do not use variables.\n\n{listed}")

    def render_calls(self, calls: list[dict]) -> str:
        return "\n".join(_dumps({"name": c["name"], "parameters": _args(c["arguments"])}) for c in calls)

    def render_result(self, result: dict) -> str:
        return result["content"]

    def call_grammar_parts(self) -> tuple[str, str, str]:
        return "", "\n", ""


class MistralFormat(ToolFormat):
    """Mistral `[TOOL_CALLS] [..]` with `[TOOL_RESULTS]` replies."""

    def describe(self, tools: list[dict]) -> str:
        return f"[AVAILABLE_TOOLS] {_dumps(tools)}[/AVAILABLE_TOOLS]"

    def render_calls(self, calls: list[dict]) -> str:
        items = [{"name": c["name"], "arguments": _args(c["arguments"]), "id": c.get("id", "")} for c in calls]
        return f"[TOOL_CALLS] {_dumps(items)}"

    def render_result(self, result: dict) -> str:
        body = {"content": result["content"], "call_id": result.get("tool_call_id") or ""}
        return f"[TOOL_RESULTS] {_dumps(body)}[/TOOL_RESULTS]"

    def call_grammar_parts(self) -> tuple[str, str, str]:
        return "[TOOL_CALLS] [", ", ", "]"


class GemmaFormat(ToolFormat):
    """Gemma: JSON calls in ```tool_call fenced blocks, results in ```tool_output blocks."""

    def describe(self, tools: list[dict]) -> str:
        listed = "\n".join(_dumps(t) for t in tools)
        return ("You can call functions. To call one, reply with a block like this (one block per call):\n"
                '```tool_call\n{"name": <function-name>, "arguments": <args-json-object>}\n```\n'
                "Function results come back in ```tool_output blocks.\n"
                f"Functions you can call:\n{listed}")

    def render_calls(self, calls: list[dict]) -> str:
        return "\n".join(f'```tool_call\n{_dumps({"name": c["name"], "arguments": _args(c["arguments"])})}\n```'
                         for c in calls)

    def render_result(self, result: dict) -> str:
        return f"```tool_output\n{result['content']}\n```"

    def call_grammar_parts(self) -> tuple[str, str, str]:
        return "```tool_call\n", "\n```\n```tool_call\n", "\n```"


FORMATS: dict[str, ToolFormat] = {
    "hermes": HermesFormat("hermes", starts=("<tool_call>",), skips=("<tool_call>", "</tool_call>"),
                           native_markers=("<tool_call>",)),
    "llama3_json": Llama3JsonFormat("llama3_json", starts=("<|python_tag|>",), skips=(";", "<|python_tag|>"),
                                    args_key="parameters", json_start=True, native_markers=("<|python_tag|>",),
                                    result_role="ipython", merge_results=False),
    "mistral": MistralFormat("mistral", starts=("[TOOL_CALLS]",), skips=("[TOOL_CALLS]", "[", "]", ","),
                             native_markers=("[TOOL_CALLS]",)),
    "gemma": GemmaFormat("gemma", starts=("```tool_call",), skips=("```tool_call", "```")),
}

# Texts that open a call region; where a tokenizer has one as a special token, detokenizing keeps it.
CALL_MARKERS: tuple[str, ...] = tuple(dict.fromkeys(s for f in FORMATS.values() for s in f.starts))

# built-in template family -> the format lowered into it
BY_FAMILY = {"chatml": "hermes", "llama3": "llama3_json", "mistral": "mistral", "gemma": "gemma"}


def get_format(name: str) -> ToolFormat:
    """The format called `name`; an unknown name lists the known ones."""
    if name not in FORMATS:
        raise TunelabError(f"unknown tool format '{name}'; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def native_format(source: str) -> ToolFormat | None:
    """The format a jinja source writes tool calls in itself, if it handles `tools` at all."""
    if "tools" not in source or "tool_calls" not in source:
        return None
    return next((f for f in FORMATS.values() if any(m in source for m in f.native_markers)), None)
