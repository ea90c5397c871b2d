"""GRPO prompt rows: what a row may hold, the bundled arithmetic task, built-in rewards, `data check`."""

from __future__ import annotations

import json

import pytest

from tunelab.data.demo import grpo_heldout_path, grpo_train_path
from tunelab.data.errors import DataError
from tunelab.data.prompts import read_prompts
from tunelab.train.reward_funcs import accuracy_reward, format_reward, load_reward_funcs, reward_inputs

FUNCS = load_reward_funcs(["format", "accuracy"])
INPUTS, REQUIRED = reward_inputs(FUNCS), {f.name: f.required for f in FUNCS}


def _read(tmp_path, *records, **kw):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_prompts([path], INPUTS, REQUIRED, **kw)


def test_prompt_forms_and_reward_columns(tmp_path):
    data = _read(tmp_path, {"prompt": "2+2?", "answer": 4},
                 {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6", "system": "Be brief."},
                 {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                               {"role": "user", "content": "1+1?"}], "answer": "2"})
    assert [r.messages[-1]["content"] for r in data.rows] == ["2+2?", "3+3?", "1+1?"]
    assert data.rows[1].messages[0] == {"role": "system", "content": "Be brief."}
    assert [r.columns for r in data.rows] == [{"answer": 4}, {"answer": "6"}, {"answer": "2"}]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "x", "answer": "1", "id": 3}, "field 'id': unknown column"),
    ({"prompt": "x"}, "field 'answer': reward function 'accuracy' needs column 'answer'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "1"},
     "field 'messages\\[1\\]': the last turn must be the user's"),
    ({"prompt": "  ", "answer": "1"}, "field 'prompt': the prompt is empty"),
    ({"question": "x", "answer": "1"}, "needs 'prompt'"),
])
def test_bad_rows_name_line_and_field(record, message, tmp_path):
    with pytest.raises(DataError, match=r"p.jsonl:1: .*" + message):
        _read(tmp_path, record)


def test_ignore_columns_drops_on_purpose_and_counts(tmp_path):
    data = _read(tmp_path, {"prompt": "x", "answer": "1", "id": 3}, ignore_columns=["id"])
    assert data.ignored == {"id": 1} and data.rows[0].columns == {"answer": "1"}


def test_bundled_arithmetic_task():
    train = read_prompts([grpo_train_path()], INPUTS, REQUIRED)
    held = read_prompts([grpo_heldout_path()], INPUTS, REQUIRED)
    assert (len(train.rows), len(held.rows)) == (240, 48)
    questions = {r.messages[-1]["content"] for r in train.rows}
    assert not questions & {r.messages[-1]["content"] for r in held.rows}  # held out for real
    for row in train.rows + held.rows:  # every answer checks out
        a, op, b = row.messages[-1]["content"].split("?")[0].removeprefix("What is ").split()
        assert int(row.columns["answer"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def test_builtin_rewards():
    done = ["It is <answer>12</answer>", "<answer>N</answer>", "<answer> 7 </answer> no, <answer>-3</answer>", "12"]
    assert format_reward(done) == [1.0, 0.0, 1.0, 0.0]
    assert accuracy_reward(done, ["12", "1", "-3", "12"]) == [1.0, 0.0, 1.0, 0.0]


def test_data_check_reports_prompts(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from tunelab.data.check import check_prompts
    from tunelab.data.config import DataConfig
    from tunelab.data.templates import ChatTemplate

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"prompt": "2+2?", "answer": "4"},
                                                           {"prompt": "2+2?", "answer": "4", "src": "web"},
                                                           {"prompt": "2+2?", "answer": "4"}]))
    tok, template = AutoTokenizer.from_pretrained(tiny_tokenizer_dir), ChatTemplate.for_model(tiny_tokenizer_dir)
    lines, rejected = check_prompts([path], template, tok, DataConfig(), INPUTS, REQUIRED)
    text = "\n".join(lines)
    assert rejected == 1 and "unknown column 'src': 1 (first at " in text
    assert "GRPO prompts: 2 valid (reward functions: accuracy, format)" in text
    assert "column 'answer' (read by accuracy): 2 of 2 rows" in text and "duplicate prompts: 1" in text
