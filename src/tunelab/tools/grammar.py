"""The grammar of a forced tool call (`tool_choice` required or named) in a template's format.

A Lark grammar in llguidance's dialect: the format's text around each call, and each call a
`%json` schema `{"name": <const>, "<args key>": <the function's parameters>}`, name first so
the streaming parser can announce the call early. The engine's constraint enforces it, so a
forced call always parses and its arguments follow the declared schema.
"""

from __future__ import annotations

import json

from tunelab.engine.structured import COMPACT, StructuredOutputsParams
from tunelab.tools.formats import ToolFormat
from tunelab.tools.messages import function_of


def call_schema(fmt: ToolFormat, tool: dict) -> dict:
    """The JSON schema of one call to `tool` in `fmt`."""
    fn = function_of(tool)
    params = fn.get("parameters") or {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, fmt.args_key: params},
            "required": ["name", fmt.args_key], "additionalProperties": False, "x-guidance": COMPACT}


def tool_call_grammar(fmt: ToolFormat, tools: list[dict], parallel: bool = True) -> str:
    """Lark text: one call (or, with `parallel`, one or more) to any of `tools`."""
    before, between, after = fmt.call_grammar_parts()
    rules = [f"call_{i}: %json {json.dumps(call_schema(fmt, t))}" for i, t in enumerate(tools)]
    calls = "call (" + json.dumps(between) + " call)*" if parallel else "call"
    head = f"start: {_lit(before)} {calls} {_lit(after)}".replace("  ", " ")
    return "\n".join([head, "call: " + " | ".join(f"call_{i}" for i in range(len(tools))), *rules])


def forced_call(fmt: ToolFormat, tools: list[dict], parallel: bool, param: str) -> StructuredOutputsParams:
    """The engine constraint for a forced call; `param` names the request field in errors."""
    return StructuredOutputsParams(grammar=tool_call_grammar(fmt, tools, parallel), param=param)


def _lit(text: str) -> str:
    return json.dumps(text) if text else ""
