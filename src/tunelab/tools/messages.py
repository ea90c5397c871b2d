"""Tool conversations in one shape, and their lowering to plain turns.

The shape is OpenAI's: `tools` is a list of `{"type": "function", "function": {name,
description, parameters}}`; an assistant turn may carry `tool_calls` (`{id, type, function:
{name, arguments}}`, arguments a JSON string); a `tool` turn carries `content` and
`tool_call_id`. Training rows, HTTP requests and `LLM.chat` all arrive here in that shape.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tunelab.tools.formats import ToolFormat


def new_call_id() -> str:
    """A fresh OpenAI-style call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def has_tool_turns(messages: list[dict]) -> bool:
    """Whether a conversation holds tool calls or tool results."""
    return any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)


def tool_names(tools: list[dict] | None) -> list[str]:
    """The function names a `tools` list declares."""
    return [function_of(t).get("name", "") for t in tools or []]


def function_of(tool: dict) -> dict:
    """The `function` object of a tool (a bare function dict is accepted too)."""
    inner = tool.get("function") if isinstance(tool, dict) else None
    return inner if isinstance(inner, dict) else (tool if isinstance(tool, dict) else {})


def calls_of(message: dict) -> list[dict]:
    """An assistant turn's calls as `{id, name, arguments}` with arguments a JSON string."""
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        calls.append({"id": call.get("id") or f"call_{i}", "name": fn.get("name", ""),
                      "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})
    return calls


def native_messages(messages: list[dict]) -> list[dict]:
    """Messages for a template with its own tool support: arguments as objects, as HF templates expect."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"id": c["id"], "type": "function",
                      "function": {"name": c["name"], "arguments": _value(c["arguments"])}} for c in calls_of(m)]
            m = {**m, "tool_calls": calls, "content": m.get("content") or ""}
        out.append(m)
    return out


def lower(messages: list[dict], tools: list[dict] | None, fmt: ToolFormat) -> list[dict]:
    """Plain {role, content} turns that render `fmt`'s text for tools, calls and results."""
    out: list[dict] = []
    for m in messages:
        if m.get("role") == "tool":
            _add_result(out, m, fmt)
        elif m.get("tool_calls"):
            text = fmt.render_calls(calls_of(m))
            content = m.get("content") or ""
            out.append({"role": "assistant", "content": f"{content}\n{text}" if content else text})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return strip_marks(_with_tools(out, tools, fmt) if tools else out)


def _add_result(out: list[dict], message: dict, fmt: ToolFormat) -> None:
    """Append a tool result, sharing the previous turn when it is a result turn too."""
    result = {"content": _text(message.get("content")), "tool_call_id": message.get("tool_call_id"),
              "name": message.get("name")}
    text = fmt.render_results([result])
    last = out[-1] if out else None
    if fmt.merge_results and last is not None and last.get("_results"):
        last["content"] += "\n" + text
        return
    out.append({"role": fmt.result_role, "content": text, "_results": True})


def _with_tools(messages: list[dict], tools: list[dict], fmt: ToolFormat) -> list[dict]:
    """Put the tool description in the system turn (made if missing)."""
    description = fmt.describe(tools)
    if messages and messages[0]["role"] == "system":
        head = messages[0]["content"]
        return [{"role": "system", "content": f"{head}\n\n{description}" if head else description}, *messages[1:]]
    return [{"role": "system", "content": description}, *messages]


def strip_marks(messages: list[dict]) -> list[dict]:
    """Drop lowering's bookkeeping keys before rendering."""
    return [{k: v for k, v in m.items() if not k.startswith("_")} for m in messages]


def _text(content: Any) -> str:
    """A tool result's content as text (structured results become JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return json.dumps(content, ensure_ascii=False)


def _value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
