"""Fixtures for data tests: the tiny tokenizer and a few conversations."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture
def conversation() -> list[dict]:
    """System, two user/assistant exchanges, one in Chinese."""
    return [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am the tunelab assistant."},
        {"role": "user", "content": "你是谁？"},
        {"role": "assistant", "content": "我是 tunelab 助手。"},
    ]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A model directory as far as the data layer cares: config.json plus the tiny tokenizer."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("data_model") / "tiny-qwen2"
    shutil.copytree(tiny_tokenizer_dir, out)
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return out
