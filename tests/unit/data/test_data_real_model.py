"""The data layer on the real default model (Gemma 3 270M): its tokenizer and chosen template."""

from __future__ import annotations

import pytest

from tunelab.data.config import DataConfig
from tunelab.data.demo import demo_train_path
from tunelab.data.formats import read_datasets
from tunelab.data.templates import ChatTemplate, encode_prompt
from tunelab.data.tokenize import IGNORE, build_examples

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def default_model():
    from tunelab.store.resolve import resolve_model

    return resolve_model(None)


def test_default_model_uses_gemma_template_and_masks_demo_data(default_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model)
    template = ChatTemplate.for_model(default_model)
    assert template.name == "gemma"
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in template.stop_token_ids(tokenizer)
    rows = read_datasets([demo_train_path()]).rows
    examples, stats = build_examples(rows, template, tokenizer, DataConfig())
    assert stats.kept == len(rows) and stats.untrained_turns == 0 and 0.3 < stats.loss_share < 0.8
    for row, example in zip(rows, examples):
        first_trained = next(i for i, x in enumerate(example.labels) if x != IGNORE)
        if len(row.messages) == 2:  # single turn: everything before the reply is the served prompt
            assert example.input_ids[:first_trained] == encode_prompt(template, tokenizer, row.messages[:-1])
        assert example.input_ids[0] == tokenizer.bos_token_id


def test_data_check_on_demo_with_default_model(capsys, default_model):
    from tunelab.cli import main

    assert main(["data", "check", str(demo_train_path())]) == 0
    out = capsys.readouterr().out
    rows = sum(1 for line in open(demo_train_path(), encoding="utf-8") if line.strip())
    assert "chat template: gemma (built-in)" in out and f"rows: {rows} valid" in out
