"""Tool-calling rows: OpenAI messages and LLaMA-Factory's sharegpt tool format, read and checked.

Both become one shape (`tunelab.tools.messages`): an assistant turn with `tool_calls`
(`{id, type, function: {name, arguments}}`, arguments a JSON string) and `tool` turns with
the result. OpenAI rows carry `tools` and `tool_calls` as they are; LLaMA-Factory rows have
`function_call` turns (a JSON call, or a list for parallel calls), `observation` turns and a
`tools` column (a JSON string or list of functions). Calls are checked against the declared
tools: an unknown function, arguments that are not a JSON object, or arguments that break the
function's schema are a DataError naming file, line and field. The template renders them; the
loss covers the assistant's calls, never the tool results (they are not assistant turns).
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.data.errors import DataError

SHAREGPT_TOOL_ROLES = {"function_call": "assistant", "observation": "tool", "tool": "tool"}


def read_tools(value: Any, key: str, source: str, line: int) -> list[dict] | None:
    """A row's `tools` (JSON text or a list; bare functions are wrapped) as OpenAI tool dicts."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise DataError("bad tools", f"tools is not valid JSON: {err}", source, line, key) from None
    if not isinstance(value, list):
        raise DataError("bad tools", f"expected a list of tools, got {type(value).__name__}", source, line, key)
    return [_tool(t, f"{key}[{i}]", source, line) for i, t in enumerate(value)]


def _tool(tool: Any, where: str, source: str, line: int) -> dict:
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise DataError("bad tools", "a tool needs a function name", source, line, where)
    return {"type": "function", "function": fn}


def openai_calls(value: Any, where: str, source: str, line: int) -> list[dict]:
    """An assistant turn's `tool_calls`, arguments as JSON text."""
    if not isinstance(value, list) or not value:
        raise DataError("bad tool call", "tool_calls must be a non-empty list", source, line, where)
    return [_call(c.get("function") if isinstance(c, dict) else None, c.get("id") if isinstance(c, dict) else None,
                  f"{where}[{i}]", source, line) for i, c in enumerate(value)]


def function_call_turn(value: Any, where: str, source: str, line: int) -> dict:
    """A LLaMA-Factory `function_call` turn (a JSON call or list of calls) as an assistant turn."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError as err:
        raise DataError("bad tool call", f"function_call is not valid JSON: {err}", source, line, where) from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    return {"role": "assistant", "content": "",
            "tool_calls": [_call(c, None, f"{where}[{i}]" if len(calls) > 1 else where, source, line)
                           for i, c in enumerate(calls)]}


def _call(fn: Any, call_id: Any, where: str, source: str, line: int) -> dict:
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise DataError("bad tool call", "a call needs {\"name\": ..., \"arguments\": ...}", source, line, where)
    args = fn.get("arguments", fn.get("parameters", {}))
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return {"id": call_id if isinstance(call_id, str) else f"call_{line}_{where}", "type": "function",
            "function": {"name": fn["name"], "arguments": text}}


def check_calls(messages: list[dict], tools: list[dict] | None, key: str, source: str, line: int) -> None:
    """Every call names a declared function with a JSON-object argument that fits its schema."""
    declared = {t["function"]["name"]: t["function"] for t in tools or []}
    for i, turn in enumerate(messages):
        for j, call in enumerate(turn.get("tool_calls") or []):
            _check_call(call["function"], declared, tools is not None, f"{key}[{i}].tool_calls[{j}]", source, line)


def _check_call(fn: dict, declared: dict[str, dict], has_tools: bool, where: str, source: str, line: int) -> None:
    name = fn["name"]
    if has_tools and name not in declared:
        known = ", ".join(declared) or "none"
        raise DataError("unknown function", f"calls '{name}', which is not among the row's tools ({known})",
                        source, line, f"{where}.function.name")
    try:
        args = json.loads(fn["arguments"])
    except ValueError as err:
        raise DataError("bad tool call", f"arguments of '{name}' are not valid JSON: {err}", source, line,
                        f"{where}.function.arguments") from None
    if not isinstance(args, dict):
        raise DataError("bad tool call", f"arguments of '{name}' must be a JSON object", source, line,
                        f"{where}.function.arguments")
    problem = _schema_problem(args, declared.get(name, {}).get("parameters"))
    if problem:
        raise DataError("bad tool call", f"arguments of '{name}' do not match its parameters: {problem}",
                        source, line, f"{where}.function.arguments")


def _schema_problem(args: dict, schema: Any) -> str | None:
    """Why `args` breaks `schema` (jsonschema when installed, else required keys only)."""
    if not isinstance(schema, dict):
        return None
    try:
        import jsonschema
    except ImportError:
        missing = [k for k in schema.get("required", []) if k not in args]
        return f"missing {', '.join(missing)}" if missing else None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
    return error.message if error is not None else None
