"""A GGUF's chat template renders tools, calls and results itself, exactly as tunelab does.

The check is llama-cpp-python's own jinja chat formatter on the exported file's metadata,
for every tool format (one built-in template family each), against `ChatTemplate.render`.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

gguf = pytest.importorskip("gguf")
llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format")

from tunelab.data.templates import ChatTemplate  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.tools.formats import BY_FAMILY  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                            "unit": {"enum": ["c", "f"]}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {
             "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]


def _call(call_id: str, name: str, args: dict, as_string: bool = True) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args) if as_string else args}}


CONVERSATIONS = {
    "single call": [{"role": "user", "content": "Weather in Paris?"}],
    "multi-turn, parallel calls, results": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris, and 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            _call("call_a", "get_weather", {"city": "Paris", "unit": "c"}),
            _call("call_b", "add", {"a": 2, "b": 3}, as_string=False)]},
        {"role": "tool", "tool_call_id": "call_a", "content": "22 C, \"sunny\""},
        {"role": "tool", "tool_call_id": "call_b", "content": "5"},
        {"role": "assistant", "content": "22 C and sunny; 2+3 is 5."},
        {"role": "user", "content": "And in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [_call("call_c", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "tool_call_id": "call_c", "content": [{"type": "text", "text": "-3 C"}]}],
    "plain chat": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
}


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory) -> dict[str, tuple[ChatTemplate, dict]]:
    """family -> (its template with the GGUF's BOS/EOS, the exported GGUF's metadata)."""
    out = {}
    for family in BY_FAMILY:
        template = ChatTemplate.builtin(family, eos_token="<|im_end|>")
        path = write_gguf(tiny_models["llama"], tmp_path_factory.mktemp(family) / "m.gguf", "f16", template,
                          log=lambda _m: None)
        fields = {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}
        tokens = fields["tokenizer.ggml.tokens"]
        bos, eos = (tokens[fields[k]] if k in fields else "" for k in ("tokenizer.ggml.bos_token_id",
                                                                          "tokenizer.ggml.eos_token_id"))
        out[family] = (dataclasses.replace(template, bos_token=bos, eos_token=eos), fields)
    return out


@pytest.mark.parametrize("family", list(BY_FAMILY))
@pytest.mark.parametrize("case", list(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [True, False])
def test_llama_cpp_renders_the_gguf_template_as_tunelab_does(exported, family, case, with_tools):
    template, fields = exported[family]
    messages, tools = CONVERSATIONS[case], TOOLS if with_tools else None
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=fields["tokenizer.chat_template"], eos_token=template.eos_token, bos_token=template.bos_token)
    prompt = formatter(messages=messages, tools=tools).prompt
    assert prompt == template.render(messages, add_generation_prompt=True, tools=tools)
    if with_tools:  # the format's texts really are in it, not an empty render on both sides
        assert "get_weather" in prompt and ("Weather now" in prompt)
    if case.startswith("multi"):
        assert "22 C" in prompt and "-3 C" in prompt and "Oslo" in prompt


def test_a_template_with_native_tools_is_exported_as_it_is(tiny_models, tmp_path):
    from pathlib import Path

    source = (Path(__file__).parents[2] / "assets" / "templates" / "qwen2_5_tools.jinja").read_text()
    template = ChatTemplate("qwen2.5", source, ["<|im_end|>"], "", "<|im_end|>")
    path = write_gguf(tiny_models["llama"], tmp_path / "q.gguf", "f16", template, log=lambda _m: None)
    assert gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"].contents() == source
