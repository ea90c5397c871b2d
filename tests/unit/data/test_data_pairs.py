"""Preference rows: every pair format, KTO labels, bad rows, pair tokenization and `data check`."""

from __future__ import annotations

import json

import pytest

from tunelab.cli import main
from tunelab.data.config import DataConfig
from tunelab.data.demo import preference_heldout_path, preference_train_path
from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets
from tunelab.data.templates import ChatTemplate
from tunelab.data.tokenize import IGNORE, tokenize_preference, tokenize_preference_rows

Q = [{"role": "user", "content": "q"}]
A, B = {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}
PAIRS = [
    ("preference", {"prompt": "q", "chosen": "a", "rejected": "b"}),
    ("preference", {"prompt": Q, "chosen": [A], "rejected": [B]}),
    ("preference", {"chosen": Q + [A], "rejected": Q + [B]}),  # TRL's implicit prompt
    ("alpaca", {"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
                  "rejected": {"from": "gpt", "value": "b"}}),
    ("messages", {"messages": Q, "chosen": A, "rejected": "b"}),
]


def _write(tmp_path, *records, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt,record", PAIRS)
def test_each_pair_format_reads_as_prompt_chosen_and_rejected(fmt, record, tmp_path):
    row = read_datasets([_write(tmp_path, record)]).rows[0]
    assert (row.format, row.kind) == (fmt, "pair")
    assert row.messages == Q + [A] and row.rejected == [B]


def test_llamafactory_ranking_datasets_and_kto_tag(tmp_path):
    _write(tmp_path, {"instruction": "q", "chosen": "a", "rejected": "b"}, name="rank.jsonl")
    _write(tmp_path, {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                      "kto": False}, name="kto.jsonl")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "rank": {"file_name": "rank.jsonl", "ranking": True},
        "kto": {"file_name": "kto.jsonl", "formatting": "sharegpt", "columns": {"kto_tag": "kto"}}}))
    rows = read_datasets([tmp_path / "dataset_info.json"]).rows
    assert [(r.format, r.kind) for r in rows] == [("alpaca", "pair"), ("sharegpt", "kto")]
    assert rows[0].rejected == [B] and rows[1].label is False


def test_kto_rows_from_messages_and_prompt_completion(tmp_path):
    path = _write(tmp_path, {"messages": Q + [A], "label": True}, {"prompt": "q", "completion": "b", "label": "false"})
    assert [(r.kind, r.label) for r in read_datasets([path]).rows] == [("kto", True), ("kto", False)]


@pytest.mark.parametrize("record,field,message", [
    ({"prompt": "q", "chosen": " ", "rejected": "b"}, "chosen", "the reply is empty"),
    ({"prompt": "q", "chosen": "a", "rejected": ""}, "rejected", "the reply is empty"),
    ({"prompt": "q", "chosen": [A, B], "rejected": "b"}, "chosen", "expected one reply message, got 2"),
    ({"prompt": "q", "chosen": {"role": "user", "content": "a"}, "rejected": "b"}, "chosen", "not the assistant"),
    ({"chosen": Q + [A], "rejected": [{"role": "user", "content": "x"}, B]}, "rejected", "share every message"),
    ({"messages": Q + [A], "label": "maybe"}, "label", "expected true or false"),
])
def test_bad_pair_rows_name_file_line_and_field(record, field, message, tmp_path):
    path = _write(tmp_path, {"prompt": "q", "chosen": "a", "rejected": "b"}, record)
    with pytest.raises(DataError, match=f"{path}:2: field '{field}'.*{message}"):
        read_datasets([path])


def test_pair_tokenizes_into_shared_prompt_and_two_completions(tokenizer, model_dir):
    template = ChatTemplate.for_model(model_dir)
    row = read_datasets([preference_train_path()]).rows[31]  # 你是谁？
    example, status = tokenize_preference(row, template, tokenizer, DataConfig(cutoff_len=256))
    assert status == "kept" and example.label is None
    chosen, rejected = (tokenizer.decode(c) for c in example.completions)
    assert tokenizer.decode(example.prompt_ids).endswith("你是谁？<|im_end|>\n<|im_start|>assistant\n")
    assert chosen.startswith("我是 tunelab 助手") and rejected.startswith("不关你的事")
    assert chosen.endswith("<|im_end|>\n")
    # the same rendering as SFT: prompt + chosen equals the chosen conversation's tokens
    from tunelab.data.tokenize import render_row

    rendered = render_row(row, template, tokenizer, DataConfig(train_on="last"))
    assert example.prompt_ids + example.completions[0] == rendered.input_ids
    assert rendered.labels[len(example.prompt_ids) - 1] == IGNORE != rendered.labels[len(example.prompt_ids)]


def test_pair_over_cutoff_is_dropped_whole_and_kto_unpairs(tokenizer, model_dir):
    template = ChatTemplate.for_model(model_dir)
    rows = read_datasets([preference_train_path()]).rows[:6]
    kept, stats, lengths = tokenize_preference_rows(rows, template, tokenizer, DataConfig(cutoff_len=40))
    assert stats.kept + stats.dropped_over_cutoff == 6 and stats.dropped_over_cutoff > 0
    assert all(len(e.prompt_ids) + max(map(len, e.completions)) <= 40 for e in kept)
    assert sorted(lengths)[-1] > 40
    unpaired, _, _ = tokenize_preference_rows(rows, template, tokenizer, DataConfig(cutoff_len=256), unpair=True)
    assert len(unpaired) == 12 and [e.label for e in unpaired[:2]] == [True, False]


def test_bundled_preference_dataset_has_a_disjoint_held_out_split():
    train, held = (read_datasets([p]) for p in (preference_train_path(), preference_heldout_path()))
    assert train.counts == {"preference": 48} and held.counts == {"preference": 12}
    prompts = {r.messages[0]["content"] for r in train.rows}
    assert not prompts & {r.messages[0]["content"] for r in held.rows}
    assert any("你" in p for p in prompts)


@pytest.mark.parametrize("to", ["messages", "sharegpt", "alpaca"])
def test_convert_keeps_pairs_and_labels(to, tmp_path):
    from tunelab.data.convert import convert_row, write_records

    rows = read_datasets([_write(tmp_path, *(r for _, r in PAIRS), {"messages": Q + [A], "label": False})]).rows
    out = write_records(tmp_path / f"out-{to}.jsonl", [convert_row(r, to) for r in rows])
    back = read_datasets([out]).rows
    assert [(r.messages, r.rejected, r.label) for r in back] == [(r.messages, r.rejected, r.label) for r in rows]
    assert {r.format for r in back} == {to}


def test_data_check_reports_pairs(capsys, model_dir, tmp_path):
    same = {"prompt": "q", "chosen": "a", "rejected": "a"}
    empty = {"prompt": "q", "chosen": "a", "rejected": " "}
    long = {"prompt": "word " * 30, "chosen": "a", "rejected": "b"}
    path = _write(tmp_path, *(r for _, r in PAIRS), same, empty, {"messages": Q + [A], "label": True}, long)
    code = main(["data", "check", str(path), "--model", str(model_dir), "--skip-invalid", "--cutoff", "24"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preference pairs: 8 (alpaca 1, messages 1, preference 5, sharegpt 1)" in out
    assert "KTO rows: 1 (messages 1)" in out
    assert f"identical chosen and rejected: 1 (first at {path}:7)" in out
    assert f"empty sides: 1 (first at {path}:8)" in out
    assert "chosen tokens (prompt + reply): p50 14" in out
    assert "over cutoff (24): 1 dropped whole" in out and "preference examples: 8 kept" in out
