"""Tools of the Responses and Anthropic APIs in the one tool shape the chat template and
`serve/tool_calls.py` take (OpenAI chat's): definitions, `tool_choice`, earlier calls and results.

    Responses {type: function, name, parameters}      -> {type: function, function: {name, parameters}}
    Anthropic {name, input_schema}                      -> the same
    Responses tool_choice {type: function, name}       -> NamedToolChoice; Anthropic {type: any} -> required
    function_call / tool_use (an earlier reply)        -> assistant turn with tool_calls
    function_call_output / tool_result                 -> a `tool` turn

Only function tools are served; hosted tools (web search, files, code) are a 400 naming the entry,
and so is a key of a tool or a tool_choice object that is not read here (never dropped).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from tunelab.serve.errors import bad_request
from tunelab.serve.tools_protocol import NamedFunction, NamedToolChoice, ToolDefinition

# The keys read from each API's tool and tool_choice objects (cache_control: a prompt-cache hint of
# Anthropic's, which has no effect on the reply and is accepted as the message blocks accept it)
TOOL_KEYS = {"parameters": frozenset({"type", "name", "description", "parameters", "strict"}),
             "input_schema": frozenset({"type", "name", "description", "input_schema", "strict", "cache_control"})}
RESPONSES_CHOICE_KEYS = frozenset({"type", "name"})
ANTHROPIC_CHOICE_KEYS = frozenset({"type", "name", "disable_parallel_tool_use"})


def check_keys(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    """A 400 naming the first key of `obj` that is not in `known`."""
    unknown = sorted(set(obj) - known)
    if unknown:
        raise bad_request(f"{where}.{unknown[0]}: not a supported field here (supported: {', '.join(sorted(known))})",
                          param=f"{where}.{unknown[0]}")


def function_tools(tools: list[dict[str, Any]] | None, schema_key: str, param: str = "tools") -> list[dict]:
    """Function tools (`parameters` under `schema_key`) as the chat template takes them."""
    out = []
    for i, tool in enumerate(tools or []):
        kind = tool.get("type", "function" if schema_key == "parameters" else "custom")
        if kind not in ("function", "custom"):
            raise bad_request(f"{param}.{i}.type: '{kind}' tools are not served, only function tools",
                              param=f"{param}.{i}.type")
        check_keys(tool, TOOL_KEYS[schema_key], f"{param}.{i}")
        fn = {"name": tool.get("name"), "description": tool.get("description"),
              "parameters": tool.get(schema_key), "strict": tool.get("strict")}
        try:
            out.append(ToolDefinition(function={k: v for k, v in fn.items() if v is not None}).as_dict())
        except ValidationError as err:
            first = err.errors()[0]
            message = f"{param}.{i}: {first.get('msg', 'invalid tool')}"
            raise bad_request(message, param=f"{param}.{i}") from None
    return out


def responses_choice(choice: str | dict[str, Any] | None) -> Any:
    """A Responses `tool_choice` as `plan_tools` takes it."""
    if choice is None or isinstance(choice, str):
        return choice
    check_keys(choice, RESPONSES_CHOICE_KEYS, "tool_choice")
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return NamedToolChoice(function=NamedFunction(name=choice["name"]))
    raise bad_request(f"tool_choice {json.dumps(choice)[:80]} is not served; use auto, none, required or "
                      "{\"type\": \"function\", \"name\": ...}", param="tool_choice")


def anthropic_choice(choice: dict[str, Any] | None) -> tuple[Any, bool | None]:
    """An Anthropic `tool_choice` as (`plan_tools`' choice, parallel calls allowed)."""
    if choice is None:
        return None, None
    check_keys(choice, ANTHROPIC_CHOICE_KEYS, "tool_choice")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind, parallel
    if kind == "any":
        return "required", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return NamedToolChoice(function=NamedFunction(name=choice["name"])), parallel
    raise bad_request(f"tool_choice.type '{kind}' is not served; use auto, any, tool or none",
                      param="tool_choice.type")


def add_call(turns: list[dict], call_id: str, name: str, arguments: str) -> None:
    """An earlier reply's call: joins the assistant turn just before, else opens one."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if turns and turns[-1]["role"] == "assistant":
        turns[-1].setdefault("tool_calls", []).append(call)
    else:
        turns.append({"role": "assistant", "content": "", "tool_calls": [call]})


def add_result(turns: list[dict], call_id: str, content: str, name: str | None = None) -> None:
    """A tool's result, named `name` if given, else after the call it answers."""
    names = {c["id"]: c["function"]["name"] for t in turns for c in t.get("tool_calls", [])}
    turns.append({"role": "tool", "tool_call_id": call_id, "name": name or names.get(call_id), "content": content})


def arguments_object(arguments: str) -> Any:
    """A call's arguments as Anthropic's `input` object (as written when they are not JSON)."""
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return arguments
