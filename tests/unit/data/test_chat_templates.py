"""ChatTemplate: choosing, rendering, saving and stop tokens."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from tunelab.data.errors import TemplateError
from tunelab.data.templates import (TEMPLATE_FILE, ChatTemplate, TokenizerInfo, choose_template, encode_prompt,
                                    resolve_template, saved_template)

BUILTINS = ["llama3", "chatml", "gemma", "mistral", "default"]


def test_chatml_renders_exact_text(conversation):
    text = ChatTemplate.builtin("chatml", eos_token="<|im_end|>").render(conversation[:3], add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\nI am the tunelab assistant.<|im_end|>\n"
    )


def test_gemma_folds_system_into_first_user_turn(conversation):
    text = ChatTemplate.builtin("gemma", bos_token="<bos>").render(conversation[:2], add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nYou are helpful.\n\nWho are you?<end_of_turn>\n<start_of_turn>model\n"


def test_mistral_and_llama3_shapes(conversation):
    mistral = ChatTemplate.builtin("mistral", "<s>", "</s>").render(conversation[1:3])
    assert mistral == "<s>[INST] Who are you? [/INST] I am the tunelab assistant.</s>"
    llama = ChatTemplate.builtin("llama3", "<|begin_of_text|>").render(conversation[1:2], add_generation_prompt=True)
    assert llama == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_tokenizer_template_renders_like_transformers(tokenizer, tiny_tokenizer_dir, conversation):
    template = ChatTemplate.for_model(tiny_tokenizer_dir)
    assert template.name == "tokenizer"
    for gen in (False, True):
        msgs = conversation if not gen else conversation[:4]
        expected = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        assert template.render(msgs, add_generation_prompt=gen) == expected
    assert template.stop_strings == ["<|im_end|>"]
    assert template.stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_encode_prompt_ends_with_generation_prompt(tokenizer, tiny_tokenizer_dir, conversation):
    ids = encode_prompt(ChatTemplate.for_model(tiny_tokenizer_dir), tokenizer, conversation[:2])
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert ids == tokenizer.apply_chat_template(conversation[:2], add_generation_prompt=True, return_dict=False)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_stop_token_ids_include_end_of_turn(name, tokenizer):
    template = ChatTemplate.builtin(name, eos_token=tokenizer.eos_token)
    ids = template.stop_token_ids(tokenizer)
    assert tokenizer.eos_token_id in ids
    for text in template.stop_strings:
        assert tokenizer.convert_tokens_to_ids(text) in ids


def _model_dir(tmp_path, tiny_tokenizer_dir, model_type: str, keep_template: bool):
    out = tmp_path / model_type
    shutil.copytree(tiny_tokenizer_dir, out)
    if not keep_template:
        (out / "chat_template.jinja").unlink()
    (out / "config.json").write_text(json.dumps({"model_type": model_type}))
    return out


@pytest.mark.parametrize("model_type,expected", [
    ("gemma3_text", "gemma"), ("qwen2", "chatml"), ("llama", "llama3"), ("mistral", "mistral"), ("gpt2", "default"),
    ("qwen3", "qwen3"), ("qwen3_moe", "qwen3"),
])
def test_base_model_gets_builtin_by_architecture(tmp_path, tiny_tokenizer_dir, model_type, expected):
    template = ChatTemplate.for_model(_model_dir(tmp_path, tiny_tokenizer_dir, model_type, keep_template=False))
    assert template.name == expected
    assert template.eos_token == "<|im_end|>"


def test_architecture_template_needs_its_end_token(tmp_path, tiny_tokenizer_dir):
    model = _model_dir(tmp_path, tiny_tokenizer_dir, "llama", keep_template=False)
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|eot_id|>"]
    (model / "tokenizer.json").write_text(json.dumps(tok))
    assert ChatTemplate.for_model(model).name == "default"


def test_saved_template_round_trips(tmp_path, tiny_tokenizer_dir):
    model = _model_dir(tmp_path, tiny_tokenizer_dir, "qwen2", keep_template=True)
    saved = ChatTemplate.builtin("llama3", "<|begin_of_text|>", "<|im_end|>", system="Be brief.")
    saved.save(model)
    assert not [p for p in model.iterdir() if p.name.endswith(".tmp")]
    assert ChatTemplate.for_model(model) == saved == saved_template(model)
    assert ChatTemplate.load(model / TEMPLATE_FILE) == saved


def test_resolver_order(tmp_path, tiny_tokenizer_dir):
    """adapter's saved > override > model's saved > tokenizer's own > architecture's > default."""
    model = _model_dir(tmp_path, tiny_tokenizer_dir, "llama", keep_template=True)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    assert resolve_template(model, adapter).name == "tokenizer"  # adapter without a saved template
    ChatTemplate.builtin("mistral").save(model)
    assert resolve_template(model).name == "mistral"
    assert resolve_template(model, adapter, override="gemma").name == "gemma"
    ChatTemplate.builtin("default", system="Saved.").save(adapter)
    chosen = resolve_template(model, adapter, override="gemma", system="Mine.")
    assert (chosen.name, chosen.system) == ("default", "Mine.")
    assert resolve_template(model, adapter).system == "Saved."
    (model / TEMPLATE_FILE).unlink()
    (model / "chat_template.jinja").unlink()
    assert resolve_template(model).name == "llama3"


def test_resolver_override_names_bad_template(tiny_tokenizer_dir):
    with pytest.raises(TemplateError, match="unknown chat template 'vicuna'"):
        resolve_template(tiny_tokenizer_dir, override="vicuna")


def test_default_system_prompt_applies_only_without_one(conversation):
    template = ChatTemplate.builtin("chatml", system="Default.")
    assert "Default." in template.render(conversation[1:3])
    assert "Default." not in template.render(conversation[:3])


def test_template_kwargs_reach_jinja():
    source = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<think>\\n\\n</think>' if enable_thinking is false else '<think>' }}{% endif %}")
    template = ChatTemplate("qwen3-like", source)
    msgs = [{"role": "user", "content": "q"}]
    assert template.render(msgs, add_generation_prompt=True) == "q<think>"
    assert template.render(msgs, add_generation_prompt=True, enable_thinking=False) == "q<think>\n\n</think>"


def test_errors_are_clear():
    with pytest.raises(TemplateError, match="unknown chat template 'vicuna'.*chatml"):
        ChatTemplate.builtin("vicuna")
    refusing = ChatTemplate("strict", "{{ raise_exception('no system role') }}")
    with pytest.raises(TemplateError, match="no system role"):
        refusing.render([{"role": "user", "content": "x"}])
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        ChatTemplate("broken", "{% for %}").render([])
    with pytest.raises(TemplateError, match="no saved chat template"):
        ChatTemplate.load("/nonexistent-dir")


def test_generation_blocks_from_hub_templates_render_their_body():
    source = "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    assert ChatTemplate("hub", source).render([{"role": "assistant", "content": "ok"}]) == "ok"


def test_choose_template_from_header_facts():
    """The llama.cpp backend's path: facts from a GGUF header instead of a model dir."""
    from tunelab.data.builtin_templates import CHATML

    info = TokenizerInfo(CHATML, "", "<|endoftext|>", ["<|im_end|>", "<|eot_id|>"], "llama", own_name="gguf")
    own = choose_template(info)
    assert (own.name, own.stop_strings) == ("gguf", ["<|im_end|>", "<|endoftext|>"])
    saved = ChatTemplate.builtin("gemma", system="Saved.")
    assert choose_template(info, saved=saved) == saved
    assert choose_template(info, "mistral", saved).name == "mistral"
    bare = TokenizerInfo(None, "", "<|endoftext|>", ["<|eot_id|>"], "llama")
    assert choose_template(bare).name == "llama3"
    assert choose_template(dataclasses.replace(bare, added_tokens=[])).name == "default"


def test_qwen3_uses_its_own_template_else_a_builtin_that_can_stop_thinking(tmp_path, tiny_tokenizer_dir):
    """A Qwen3 that ships a chat template renders with it; one without gets the qwen3 built-in: ChatML turns
    whose reply opens with an empty think block when enable_thinking is false (as Qwen3's own template
    does; plain ChatML dropped the switch), in ChatML's family (hermes tool calls, ChatML's Go template)."""
    own = _model_dir(tmp_path, tiny_tokenizer_dir, "qwen3", keep_template=True)
    assert ChatTemplate.for_model(own).source == (own / "chat_template.jinja").read_text()
    template = ChatTemplate.for_model(_model_dir(tmp_path / "bare", tiny_tokenizer_dir, "qwen3", keep_template=False))
    msgs = [{"role": "user", "content": "q"}]
    assert template.render(msgs, add_generation_prompt=True) == ChatTemplate.builtin("chatml").render(
        msgs, add_generation_prompt=True) == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    off = template.render(msgs, add_generation_prompt=True, enable_thinking=False)
    assert off == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert (template.builtin_family(), template.tool_format) == ("chatml", "hermes")
    assert ChatTemplate.builtin("qwen3").name == "qwen3" and template.stop_strings[0] == "<|im_end|>"
