"""The Modelfile TEMPLATE renders tool conversations as tunelab does, in Ollama's Go template terms.

There is no Ollama binary here, so the Go templates run on tests/helpers/gotemplate.py, a
small evaluator of the text/template subset these templates use; it is first checked
against Ollama's own expected renders of its tool templates (tests/assets/ollama). JSON
values (tools, arguments) are printed in the test in Python's layout, as tunelab writes
them, so the rest of the text can be compared exactly; Ollama prints them compactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from helpers.gotemplate import lex, ollama_values, parse, render
from tunelab.data.templates import ChatTemplate
from tunelab.export.modelfile import ollama_template
from tunelab.tools.formats import BY_FAMILY, FORMATS

ASSETS = Path(__file__).parents[2] / "assets" / "ollama"


def _go_struct_json(tool: dict) -> str:
    """How that Ollama version printed a tool: Go struct field order, sorted property maps, compact."""
    fn = tool["function"]
    params = fn["parameters"]
    props = {k: {f: v[f] for f in ("type", "items", "description", "enum") if f in v}
             for k, v in sorted(params["properties"].items())}
    out = {"type": tool["type"], "function": {"name": fn["name"], "description": fn["description"], "parameters": {
        "type": params["type"], "required": params["required"], "properties": props}}}
    return json.dumps(out, separators=(",", ":"))


def _ollama_dumps(value) -> str:
    if isinstance(value, dict) and "function" in value:
        return _go_struct_json(value)
    if isinstance(value, dict) and "parameters" in value:  # a bare function ({{ .Function }})
        return _go_struct_json({"type": "function", "function": value})[len('{"type":"function","function":'):-1]
    if isinstance(value, list):
        return "[" + ",".join(_ollama_dumps(v) for v in value) + "]"
    return json.dumps(dict(sorted(value.items())), separators=(",", ":"))


@pytest.mark.parametrize("name", ["qwen2.5", "mistral", "llama3.2"])
def test_the_evaluator_renders_ollamas_tool_templates_as_go_does(name):
    messages = json.loads((ASSETS / "messages.json").read_text())
    tools = json.loads((ASSETS / "tools.json").read_text())
    values = ollama_values(messages, tools, _ollama_dumps)
    assert render((ASSETS / f"{name}.gotmpl").read_text(), values) == (ASSETS / f"{name}.out").read_text()


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {
             "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]


def _call(call_id: str, name: str, args: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


CONVERSATIONS = {
    "single call": [{"role": "user", "content": "Weather in Paris?"}],
    "multi-turn, parallel calls, results": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris, and 2+3?"},
        {"role": "assistant", "content": "", "tool_calls": [
            _call("call_a", "get_weather", {"city": "Paris"}), _call("call_b", "add", {"a": 2, "b": 3})]},
        {"role": "tool", "tool_call_id": "call_a", "content": "22 C, \"sunny\""},
        {"role": "tool", "tool_call_id": "call_b", "content": "5"},
        {"role": "assistant", "content": "22 C and sunny; 2+3 is 5."},
        {"role": "user", "content": "And in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [_call("call_c", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "tool_call_id": "call_c", "content": "-3 C"}],
    "plain chat": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
}


@pytest.mark.parametrize("family", list(BY_FAMILY))
@pytest.mark.parametrize("case", list(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [True, False])
def test_template_renders_like_the_chat_template(family, case, with_tools):
    template = dataclasses.replace(ChatTemplate.builtin(family, eos_token="</s>"), bos_token="")  # BOS: the GGUF's flag
    fmt = FORMATS[BY_FAMILY[family]]
    messages, tools = CONVERSATIONS[case], TOOLS if with_tools else None
    dumps = lambda v: "\n\n".join(json.dumps(t, indent=fmt.tools_indent) for t in v) if isinstance(v, list) \
        else json.dumps(v, indent=fmt.tools_indent if "function" in v else None)  # noqa: E731
    funcs = {"json": lambda v: json.dumps(v, ensure_ascii=False)}
    got = render(ollama_template(template), ollama_values(messages, tools, dumps), funcs)
    assert got == template.render(messages, add_generation_prompt=True, tools=tools)


def _parse_tag(source: str) -> str:
    """Ollama's tools.parseTag: the first text inside the first `if` on .ToolCalls, cut at '{'."""
    def find_if(nodes):
        for n in nodes:
            if n[0] == "if" and ".ToolCalls" in n[1][0][0]:
                return n
            children = [b for _c, b in n[1]] + [n[2] or []] if n[0] == "if" else \
                [n[3], n[4] or []] if n[0] == "range" else []
            for child in children:
                found = find_if(child)
                if found:
                    return found
        return None

    node = find_if(parse(lex(source)))
    first = next((n for n in node[1][0][1] if n[0] != "text" or n[1].strip()), None) if node else None
    tag = first[1].split("{")[0].strip() if first and first[0] == "text" else ""
    return tag or "{"


@pytest.mark.parametrize("family,tag", [("chatml", "<tool_call>"), ("llama3", "{"), ("mistral", "[TOOL_CALLS] ["),
                                        ("gemma", "```tool_call")])
def test_ollama_sees_tools_capability_round_trip_and_call_tag(family, tag):
    source = ollama_template(ChatTemplate.builtin(family, eos_token="</s>"))
    # Vars() has tools and toolcalls: `ollama show` lists the tools capability
    assert "$.Tools" in source and "if .ToolCalls" in source
    assert 'eq .Role "tool"' in source  # goTemplateHasToolRoundTrip: Ollama keeps this template over the GGUF's
    assert _parse_tag(source) == tag
