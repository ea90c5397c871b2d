"""A tool format's lowering (`tools.messages.lower`) written in jinja, for files other programs render.

A GGUF carries its chat template as jinja (`tokenizer.chat_template`), which llama.cpp,
llama-cpp-python and LM Studio render with `tools=` and OpenAI messages. For a template
whose own jinja knows no tools (our built-ins, Gemma's), `tool_aware_source` puts a
prelude before it that rebuilds `messages` exactly as `lower` does in Python: the tool list
in the system turn, assistant `tool_calls` as the format's call text, `tool` replies as
result turns (consecutive ones merged where the format merges them). The template that
follows then sees plain turns, as it does when tunelab renders. Only `messages` is
rebound, so the template's own variables and logic are untouched.

One difference stays: arguments given as a JSON *string* are written as sent, where
Python re-dumps them (`{"a":1}` stays compact); as objects, or in json.dumps' own layout
(what our server returns), the text is identical.
"""

from __future__ import annotations

import json

from tunelab.tools.formats import ToolFormat


def tool_aware_source(source: str, fmt: ToolFormat | None) -> str:
    """`source` with `fmt`'s lowering in front (unchanged when `fmt` is None)."""
    return source if fmt is None else lowering_prelude(fmt) + source


def without_prelude(source: str) -> str:
    """`source` with a prelude `tool_aware_source` wrote taken off (a GGUF we exported, read back):
    tunelab renders tools itself from the template's tool format, so it wants the plain template."""
    from tunelab.tools.formats import FORMATS

    for fmt in FORMATS.values():
        prelude = lowering_prelude(fmt)
        if source.startswith(prelude):
            return source[len(prelude):]
    return source


def lowering_prelude(fmt: ToolFormat) -> str:
    """Jinja that rebinds `messages` to the lowered turns when there are tools or tool turns."""
    return "".join([
        "{%- set tl = namespace(out=[], pending=none, calls=[], tool_turns=false) -%}",
        "{%- for m in messages %}{% if m.tool_calls or m.role == 'tool' %}{% set tl.tool_turns = true %}"
        "{% endif %}{% endfor -%}",
        "{%- if (tools is defined and tools) or tl.tool_turns -%}",
        "{%- for m in messages -%}",
        "{%- if m.role == 'tool' -%}", _result(fmt), "{%- else -%}", _flush(fmt), _turn(fmt), "{%- endif -%}",
        "{%- endfor -%}", _flush(fmt),
        "{%- if tools is defined and tools -%}", _describe(fmt), "{%- endif -%}",
        "{%- set messages = tl.out -%}",
        "{%- endif %}",  # no trim after: the template's own first characters stay
    ])


def _lit(text: str) -> str:
    """A jinja string literal (json's escapes are jinja's too)."""
    return json.dumps(text)


def _result(fmt: ToolFormat) -> str:
    """One `tool` message: its text joins the pending result turn, or starts one."""
    content = ("{%- if m.content is string %}{% set c = m.content %}"
               "{% elif m.content is iterable and m.content is not mapping %}"
               "{% set c = m.content | map(attribute='text') | join %}"
               "{% else %}{% set c = m.content | tojson %}{% endif -%}")
    if fmt.result_json:
        body = ("'{\"content\": ' ~ (c | tojson) ~ ', \"call_id\": ' ~ ((m.tool_call_id or '') | tojson) ~ '}'")
    else:
        body = "c"
    text = f"{_lit(fmt.result_open)} ~ {body} ~ {_lit(fmt.result_close)}"
    merge = "true" if fmt.merge_results else "false"
    return (content + f"{{%- set r = {text} -%}}"
            f"{{%- if {merge} and tl.pending is not none %}}{{% set tl.pending = tl.pending ~ '\\n' ~ r %}}"
            f"{{%- else %}}" + _flush(fmt) + "{% set tl.pending = r %}{% endif -%}")


def _flush(fmt: ToolFormat) -> str:
    """Close the pending result turn, if any."""
    return (f"{{%- if tl.pending is not none %}}{{% set tl.out = tl.out + [{{'role': {_lit(fmt.result_role)}, "
            "'content': tl.pending}] %}{% set tl.pending = none %}{% endif -%}")


def _turn(fmt: ToolFormat) -> str:
    """A non-tool message: its calls as the format's text after its content, else role and content only."""
    name, args = _lit(fmt.call_open + '{"name": '), _lit(f', "{fmt.args_key}": ')
    call_id = " ~ ', \"id\": ' ~ ((tc.id or ('call_' ~ loop.index0)) | tojson)" if fmt.call_ids else ""
    call = f"{name} ~ ((fn.name or '') | tojson) ~ {args} ~ a{call_id} ~ '}}' ~ {_lit(fmt.call_close)}"
    return ("{%- if m.tool_calls -%}{%- set tl.calls = [] -%}"
            "{%- for tc in m.tool_calls -%}"
            "{%- set fn = tc.function if tc.function is defined else tc -%}"
            "{%- set a = fn.arguments if fn.arguments is defined else {} -%}"
            "{%- set a = a if a is string else a | tojson -%}"
            f"{{%- set tl.calls = tl.calls + [{call}] -%}}"
            "{%- endfor -%}"
            f"{{%- set t = {_lit(fmt.calls_head)} ~ (tl.calls | join({_lit(fmt.calls_sep)})) ~ "
            f"{_lit(fmt.calls_tail)} -%}}"
            "{%- set tl.out = tl.out + [{'role': 'assistant', 'content': (m.content ~ '\\n' ~ t) if m.content "
            "else t}] -%}"
            "{%- else -%}{%- set tl.out = tl.out + [{'role': m.role, 'content': m.content or ''}] -%}{%- endif -%}")


def _describe(fmt: ToolFormat) -> str:
    """The tool list into the first system turn, made if missing."""
    dump = f"tojson(indent={fmt.tools_indent})" if fmt.tools_indent else "tojson"
    return ("{%- set tl.calls = [] -%}"
            f"{{%- for tool in tools %}}{{% set tl.calls = tl.calls + [tool | {dump}] %}}{{% endfor -%}}"
            f"{{%- set d = {_lit(fmt.tools_head)} ~ (tl.calls | join({_lit(fmt.tools_sep)})) ~ "
            f"{_lit(fmt.tools_tail)} -%}}"
            "{%- if tl.out and tl.out[0].role == 'system' -%}"
            "{%- set tl.out = [{'role': 'system', 'content': (tl.out[0].content ~ '\\n\\n' ~ d) "
            "if tl.out[0].content else d}] + tl.out[1:] -%}"
            "{%- else -%}{%- set tl.out = [{'role': 'system', 'content': d}] + tl.out -%}{%- endif -%}")
