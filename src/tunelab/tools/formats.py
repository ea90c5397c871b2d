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


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _args(arguments: str) -> Any:
    """A call's JSON-string arguments as a value (left as the string when not JSON)."""
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


@dataclass(frozen=True)
class ToolFormat:
    """The text conventions of one tool-call format (see the module docstring).

    The texts are data, so the Python rendering here, the jinja a GGUF carries
    (`tools.jinja`) and the Go template of an Ollama Modelfile (`export.ollama_template`)
    write the same prompt from one definition."""

    name: str
    starts: tuple[str, ...]  # a call region opens at any of these (or at `{` if json_start)
    skips: tuple[str, ...]  # text between calls inside the region
    args_key: str = "arguments"
    json_start: bool = False  # a reply that starts with `{` is a call (Llama 3.1)
    native_markers: tuple[str, ...] = ()  # a jinja source with `tools` and one of these is native
    result_role: str = "user"
    merge_results: bool = True  # consecutive tool results share one turn
    tools_head: str = ""  # the tool description: head, the tools as JSON joined by tools_sep, tail
    tools_sep: str = "\n"
    tools_tail: str = ""
    tools_indent: int | None = None  # JSON indent of each listed tool (None: one line)
    calls_head: str = ""  # a reply's calls: head, each call wrapped in call_open/close, joined by calls_sep, tail
    call_open: str = ""
    call_close: str = ""
    calls_sep: str = "\n"
    calls_tail: str = ""
    call_ids: bool = False  # each call's JSON also carries its "id" (Mistral)
    result_open: str = ""  # one tool result: open, the content, close
    result_close: str = ""
    result_json: bool = False  # the result is `{"content": <JSON string>, "call_id": ..}` (Mistral)

    def describe(self, tools: list[dict]) -> str:
        """The text that tells the model which functions it may call (goes in the system turn)."""
        listed = self.tools_sep.join(_dumps(t, self.tools_indent) for t in tools)
        return f"{self.tools_head}{listed}{self.tools_tail}"

    def render_calls(self, calls: list[dict]) -> str:
        """Assistant text for `calls` ({id, name, arguments: JSON string} dicts)."""
        return self.calls_head + self.calls_sep.join(self.render_call(c) for c in calls) + self.calls_tail

    def render_call(self, call: dict) -> str:
        """One call: `{"name": .., "<args_key>": ..[, "id": ..]}` in its wrapper."""
        body = {"name": call["name"], self.args_key: _args(call["arguments"])}
        if self.call_ids:
            body["id"] = call.get("id", "")
        return f"{self.call_open}{_dumps(body)}{self.call_close}"

    def render_results(self, results: list[dict]) -> str:
        """Turn text for consecutive tool results ({content, tool_call_id, name} dicts)."""
        return "\n".join(self.render_result(r) for r in results)

    def render_result(self, result: dict) -> str:
        """Text of one tool result."""
        content = result["content"]
        if self.result_json:
            content = _dumps({"content": content, "call_id": result.get("tool_call_id") or ""})
        return f"{self.result_open}{content}{self.result_close}"

    def call_grammar_parts(self) -> tuple[str, str, str]:
        """(before the first call, between calls, after the last) for constrained decoding."""
        return (self.calls_head + self.call_open, self.call_close + self.calls_sep + self.call_open,
                self.call_close + self.calls_tail)


_HERMES_TOOLS = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                 "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n")
_HERMES_AFTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                 'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
                 "<args-json-object>}\n</tool_call>")
_LLAMA3_TOOLS = ("Given the following functions, please respond with a JSON for a function call with its proper "
                 'arguments that best answers the given prompt.\n\nRespond in the format {"name": function name, '
                 '"parameters": dictionary of argument name and its value}. Do not use variables.\n\n')
_GEMMA_TOOLS = ("You can call functions. To call one, reply with a block like this (one block per call):\n"
                '```tool_call\n{"name": <function-name>, "arguments": <args-json-object>}\n```\n'
                "Function results come back in ```tool_output blocks.\nFunctions you can call:\n")

FORMATS: dict[str, ToolFormat] = {
    "hermes": ToolFormat("hermes", starts=("<tool_call>",), skips=("<tool_call>", "</tool_call>"),
                         native_markers=("<tool_call>",), tools_head=_HERMES_TOOLS, tools_tail=_HERMES_AFTER,
                         call_open="<tool_call>\n", call_close="\n</tool_call>",
                         result_open="<tool_response>\n", result_close="\n</tool_response>"),
    "llama3_json": ToolFormat("llama3_json", starts=("<|python_tag|>",), skips=(";", "<|python_tag|>"),
                              args_key="parameters", json_start=True, native_markers=("<|python_tag|>",),
                              result_role="ipython", merge_results=False, tools_head=_LLAMA3_TOOLS,
                              tools_sep="\n\n", tools_indent=4),
    "mistral": ToolFormat("mistral", starts=("[TOOL_CALLS]",), skips=("[TOOL_CALLS]", "[", "]", ","),
                          native_markers=("[TOOL_CALLS]",), tools_head="[AVAILABLE_TOOLS] [", tools_sep=", ",
                          tools_tail="][/AVAILABLE_TOOLS]", calls_head="[TOOL_CALLS] [", calls_sep=", ",
                          calls_tail="]", call_ids=True, result_open="[TOOL_RESULTS] ",
                          result_close="[/TOOL_RESULTS]", result_json=True),
    "gemma": ToolFormat("gemma", starts=("```tool_call",), skips=("```tool_call", "```"), tools_head=_GEMMA_TOOLS,
                        call_open="```tool_call\n", call_close="\n```",
                        result_open="```tool_output\n", result_close="\n```"),
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
