"""Reasoning: chat_template_kwargs reach the template, and <think> text comes back as
reasoning_content (streamed too) with the answer left clean.

Deterministic by construction: the tiny model's Qwen3-style template opens `<think>`
in the prompt when thinking is on, so greedy output is all reasoning; when it is off
the template closes an empty think block, so the same kind of output is all content.
The raw text is read back through /v1/completions with the very same prompt ids.
"""

from __future__ import annotations

import shutil

import pytest
from openai import OpenAI
from transformers import AutoTokenizer

from serve_util import start_server

QWEN3_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("thinker") / "thinker"
    shutil.copytree(tiny_models["qwen2"], out)
    (out / "chat_template.jinja").write_text(QWEN3_STYLE)
    return out


@pytest.fixture(scope="module")
def client(model_dir):
    srv = start_server(model_dir, served_name="thinker")
    yield OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
    srv.stop()


MSGS = [{"role": "user", "content": "why?"}]
KW = dict(model="thinker", messages=MSGS, max_tokens=10, temperature=0)


def _raw(client, model_dir, thinking: bool) -> str:
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(MSGS, add_generation_prompt=True, tokenize=False,
                                  enable_thinking=thinking)  # transformers' own rendering
    ids = tok.encode(text, add_special_tokens=False)
    return client.completions.create(model="thinker", prompt=ids, max_tokens=10, temperature=0).choices[0].text


def test_thinking_on_returns_reasoning_content(client, model_dir):
    raw = _raw(client, model_dir, thinking=True)
    msg = client.chat.completions.create(**KW, extra_body={"chat_template_kwargs": {"enable_thinking": True}}
                                         ).choices[0].message
    assert raw and msg.model_extra["reasoning_content"] == raw
    assert msg.content == ""


def test_thinking_off_gives_clean_content(client, model_dir):
    raw = _raw(client, model_dir, thinking=False)
    msg = client.chat.completions.create(**KW, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
                                         ).choices[0].message
    assert msg.content == raw
    assert "reasoning_content" not in (msg.model_extra or {})


def test_streamed_reasoning_matches(client):
    whole = client.chat.completions.create(**KW).choices[0].message.model_extra["reasoning_content"]
    chunks = list(client.chat.completions.create(**KW, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == whole
    assert "".join(d.content or "" for d in deltas) == ""
