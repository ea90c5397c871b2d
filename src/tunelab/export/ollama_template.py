"""Ollama's Go TEMPLATE for each built-in template family, tools included.

Ollama renders prompts with Go's text/template over `.Messages` (Role, Content, ToolCalls
with .Function.Name/.Arguments, ToolCallID) and `.Tools`. Each family here writes the same
text as its jinja (`data.builtin_templates`) after tunelab's tool lowering
(`tools.messages.lower`), with the tool texts taken from the family's `ToolFormat`:

- the tool list goes at the end of the first system turn (one is opened when there is none),
- an assistant's calls follow its content, as the format writes them,
- `tool` messages become result turns in the format's role, consecutive ones in one turn
  where the format merges them.

What Ollama reads from the template, as in its own tool templates (qwen2.5, llama3.2,
mistral): a template that uses `.Tools` lists the `tools` capability in `ollama show`; the
first text inside `{{ if .ToolCalls }}` is the tag its parser finds calls by (`<tool_call>`,
`[TOOL_CALLS] [`, a ```tool_call fence; Llama's calls have none, so any JSON object is tried);
`eq .Role "tool"` marks tool results. JSON values (the tools, call arguments) are printed by
Ollama compactly (Go's json.Marshal), where tunelab writes Python's `json.dumps` layout, and
Llama's jinja trims message content where Go cannot: those are the only differences.
"""

from __future__ import annotations

from tunelab.tools.formats import FORMATS, ToolFormat

EOS = "\x00eos\x00"  # replaced by the template's EOS text (mistral and default end replies with it)

_DEFAULT = (
    "{{- range .Messages }}{{ if eq .Role \"system\" }}{{ .Content }}\n\n"
    "{{ else if eq .Role \"user\" }}### User:\n{{ .Content }}\n\n"
    "{{ else }}### Assistant:\n{{ .Content }}" + EOS + "{{ end }}{{ end }}### Assistant:\n"
)


def tool_list(fmt: ToolFormat) -> str:
    """The format's tool description over `.Tools` (each tool printed as JSON by Ollama)."""
    return (f"{fmt.tools_head}{{{{ range $j, $t := $.Tools }}}}{{{{ if $j }}}}{fmt.tools_sep}{{{{ end }}}}"
            f"{{{{ $t }}}}{{{{ end }}}}{fmt.tools_tail}")


def calls(fmt: ToolFormat) -> str:
    """A message's content and then its calls; the `if .ToolCalls` body opens with the format's tag."""
    before, between, after = fmt.call_grammar_parts()
    call_id = ', "id": "{{ $c.ID }}"' if fmt.call_ids else ""
    return ("{{ .Content }}{{ $tc := .ToolCalls }}{{ if and .Content $tc }}\n{{ end }}"
            f"{{{{ if .ToolCalls }}}}{before}{{{{ range $j, $c := .ToolCalls }}}}{{{{ if $j }}}}{between}{{{{ end }}}}"
            f'{{"name": "{{{{ $c.Function.Name }}}}", "{fmt.args_key}": {{{{ $c.Function.Arguments }}}}{call_id}}}'
            f"{{{{ end }}}}{after}{{{{ end }}}}")


def result(fmt: ToolFormat) -> str:
    """One tool result's text."""
    if fmt.result_json:
        body = '{"content": {{ json .Content }}, "call_id": {{ json .ToolCallID }}}'
    else:
        body = "{{ .Content }}"
    return f"{fmt.result_open}{body}{fmt.result_close}"


def _system_content(fmt: ToolFormat) -> str:
    """The first system message's content with the tool list after it."""
    return (f"{{{{ .Content }}}}{{{{ if $.Tools }}}}{{{{ if .Content }}}}\n\n{{{{ end }}}}{tool_list(fmt)}"
            "{{ end }}")


def _turns(fmt: ToolFormat, open_turn: str, close_turn: str, role: str) -> str:
    """ChatML/Llama-style turns: every message its own turn, a system turn leading."""
    open_result = open_turn.replace("ROLE", fmt.result_role)
    results = (f"{{{{ if eq $prev \"tool\" }}}}\n{{{{ else }}}}{open_result}{{{{ end }}}}"
               if fmt.merge_results else open_result)
    close_results = f"{{{{ if eq $prev \"tool\" }}}}{close_turn}{{{{ end }}}}" if fmt.merge_results else ""
    after_result = "" if fmt.merge_results else close_turn
    return (
        "{{- $prev := \"\" }}{{ range $i, $_ := .Messages }}"
        f"{{{{ if and (eq $i 0) $.Tools (ne .Role \"system\") }}}}{open_turn.replace('ROLE', 'system')}"
        f"{tool_list(fmt)}{close_turn}{{{{ end }}}}"
        f"{{{{ if eq .Role \"tool\" }}}}{results}{result(fmt)}{after_result}"
        f"{{{{ else }}}}{close_results}{open_turn.replace('ROLE', role)}"
        f"{{{{ if and (eq $i 0) (eq .Role \"system\") }}}}{_system_content(fmt)}{{{{ else }}}}{calls(fmt)}"
        f"{{{{ end }}}}{close_turn}{{{{ end }}}}"
        "{{ $prev = .Role }}{{ end }}"
        f"{close_results}"
    )


def chatml(fmt: ToolFormat) -> str:
    return _turns(fmt, "<|im_start|>ROLE\n", "<|im_end|>\n", "{{ .Role }}") + "<|im_start|>assistant\n"


def llama3(fmt: ToolFormat) -> str:
    return (_turns(fmt, "<|start_header_id|>ROLE<|end_header_id|>\n\n", "<|eot_id|>", "{{ .Role }}")
            + "<|start_header_id|>assistant<|end_header_id|>\n\n")


def _first_turn_system(fmt: ToolFormat) -> str:
    """Gemma and Mistral have no system turn: the system text (and the tool list) opens the first turn."""
    return (f"{{{{ if $first }}}}{{{{ if $sys }}}}{{{{ $sysText }}}}{{{{ if and $sysText $.Tools }}}}\n\n{{{{ end }}}}"
            f"{{{{ end }}}}{{{{ if $.Tools }}}}{tool_list(fmt)}{{{{ end }}}}"
            "{{ if or $sys $.Tools }}\n\n{{ end }}{{ end }}")


_FOLDED_HEAD = (
    "{{- $prev := \"\" }}{{ $first := true }}{{ $sys := false }}{{ $sysText := \"\" }}"
    "{{ range $i, $_ := .Messages }}{{ if and (eq $i 0) (eq .Role \"system\") }}"
    "{{ $sys = true }}{{ $sysText = .Content }}{{ else }}"
)
_FOLDED_TAIL = "{{ $prev = .Role }}{{ $first = false }}{{ end }}{{ end }}"


def gemma(fmt: ToolFormat) -> str:
    head = "<start_of_turn>"
    return (
        _FOLDED_HEAD
        + f"{{{{ if eq .Role \"tool\" }}}}{{{{ if eq $prev \"tool\" }}}}\n{{{{ else }}}}{head}{fmt.result_role}\n"
        + _first_turn_system(fmt) + f"{{{{ end }}}}{result(fmt)}"
        + "{{ else }}{{ if eq $prev \"tool\" }}<end_of_turn>\n{{ end }}"
        + f"{head}{{{{ if eq .Role \"assistant\" }}}}model{{{{ else }}}}{{{{ .Role }}}}{{{{ end }}}}\n"
        + _first_turn_system(fmt) + calls(fmt) + "<end_of_turn>\n{{ end }}"
        + _FOLDED_TAIL + "{{ if eq $prev \"tool\" }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
    )


def mistral(fmt: ToolFormat) -> str:
    return (
        _FOLDED_HEAD
        + "{{ if eq .Role \"tool\" }}{{ if eq $prev \"tool\" }}\n{{ else }}[INST] " + _first_turn_system(fmt)
        + f"{{{{ end }}}}{result(fmt)}"
        + "{{ else }}{{ if eq $prev \"tool\" }} [/INST]{{ end }}"
        + "{{ if eq .Role \"user\" }}[INST] " + _first_turn_system(fmt) + "{{ .Content }} [/INST]"
        + "{{ else }} " + calls(fmt) + EOS + "{{ end }}{{ end }}"
        + _FOLDED_TAIL + "{{ if eq $prev \"tool\" }} [/INST]{{ end }}"
    )


def go_template(family: str, tool_format: str | None) -> str:
    """The Go template of a built-in family (`default` has no tool format)."""
    if family == "default" or tool_format is None:
        return _DEFAULT
    return {"chatml": chatml, "llama3": llama3, "gemma": gemma, "mistral": mistral}[family](FORMATS[tool_format])


FAMILIES = ("chatml", "llama3", "gemma", "mistral", "default")
