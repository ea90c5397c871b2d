"""Unknown columns: an error naming file, line and column; never dropped unless ignore_columns names it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.config import build
from tunelab.data.config import DataConfig
from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets
from tunelab.data.rows import Schema

CHAT = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
TURNS = [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]
# one good row per format, with an extra column that format does not read
ROWS = {
    "alpaca": {"instruction": "hi", "output": "yo", "history_x": 1},
    "sharegpt": {"conversations": TURNS, "extra": 2},
    "messages": {"messages": CHAT, "extra": 2},
    "prompt_completion": {"prompt": "p", "completion": "c", "extra": 2},
    "text": {"text": "t", "extra": 2},
    "preference": {"prompt": "p", "chosen": "c", "rejected": "r", "extra": 2},
}


def _jsonl(tmp_path: Path, rows: list[dict], name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ROWS)
def test_unknown_column_names_file_line_and_column(tmp_path, fmt):
    row = ROWS[fmt]
    column = next(k for k in row if k in ("history_x", "extra"))
    good = {k: v for k, v in row.items() if k != column}
    path = _jsonl(tmp_path, [good, row])
    with pytest.raises(DataError, match=rf"d.jsonl:2: field '{column}': unknown column; {fmt} rows read") as err:
        read_datasets([path])
    assert "ignore_columns" in str(err.value)
    loaded = read_datasets([path], skip_invalid=True)  # skip_invalid: rejected with the reason, counted
    assert len(loaded.rows) == 1 and loaded.rejected == {f"unknown column '{column}'": [(str(path), 2)]}
    assert loaded.rows[0].format == fmt


def test_did_you_mean_a_close_column(tmp_path):
    path = _jsonl(tmp_path, [{"instruction": "i", "output": "o", "outptu": "x"}])
    with pytest.raises(DataError, match="field 'outptu': unknown column.*Did you mean 'output'"):
        read_datasets([path])
    path = _jsonl(tmp_path, [{"instruction": "i", "output": "o"}, {"instruction": "i", "outptu": "o"}])
    with pytest.raises(DataError, match="d.jsonl:2: field 'output': missing.*'outptu' a misspelling of 'output'"):
        read_datasets([path])


def test_ignore_columns_drops_named_columns_and_counts_them(tmp_path):
    path = _jsonl(tmp_path, [{"messages": CHAT, "id": 1, "source": "web"}, {"messages": CHAT, "id": 2}])
    loaded = read_datasets([path], ignore_columns=["id", "source", "never_there"])
    assert len(loaded.rows) == 2 and loaded.ignored == {"id": 2, "source": 1}


def test_ignore_columns_is_a_data_config_key():
    assert build(DataConfig, {"ignore_columns": ["id", "source"]}).ignore_columns == ["id", "source"]
    assert DataConfig().ignore_columns == []


@pytest.mark.parametrize("turn,key", [({"role": "user", "content": "a", "nmae": "x"}, "messages[0].nmae"),
                                      ({"role": "user", "content": "a", "tool_calls": [{}]}, "messages[0].tool_calls")])
def test_unknown_key_in_a_message(tmp_path, turn, key):
    path = _jsonl(tmp_path, [{"messages": [turn, CHAT[1]]}])
    with pytest.raises(DataError, match=rf"d.jsonl:1: field '{re.escape(key)}': unknown key; messages turns have content, role"):
        read_datasets([path])


def test_unknown_key_in_a_sharegpt_turn_and_null_keys_carry_nothing(tmp_path):
    path = _jsonl(tmp_path, [{"conversations": [TURNS[0], {**TURNS[1], "weight": 0}]}])
    with pytest.raises(DataError, match=r"field 'conversations\[1\].weight': unknown key; sharegpt turns have from, tool_calls, value"):
        read_datasets([path])
    null = {"messages": [{**CHAT[0], "name": None}, {**CHAT[1], "tool_calls": None}], "id": None}
    assert len(read_datasets([_jsonl(tmp_path, [null])]).rows) == 1


def test_csv_and_parquet_columns(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("instruction,output,notes\nq,a,n\n")
    with pytest.raises(DataError, match=r"t.csv:2: field 'notes': unknown column"):
        read_datasets([csv])
    assert read_datasets([csv], ignore_columns=["notes"]).ignored == {"notes": 1}
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"prompt": ["p"], "completion": ["c"], "score": [0.5]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet:1: field 'score': unknown column"):
        read_datasets([tmp_path / "t.parquet"])


def test_dataset_info_columns_not_mapped_are_unknown(tmp_path):
    _jsonl(tmp_path, [{"q": "hi", "a": "yo", "input": "", "meta": 1}], "raw.jsonl")
    entry = {"file_name": "raw.jsonl", "columns": {"prompt": "q", "response": "a"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": entry}))
    with pytest.raises(DataError, match=r"raw.jsonl:1: field 'meta': unknown column; alpaca rows read a, history, images, input"):
        read_datasets([tmp_path / "dataset_info.json"])
    assert len(read_datasets([tmp_path / "dataset_info.json"], ignore_columns=["meta"]).rows) == 1


def test_pairs_and_tools_columns_are_known_only_where_read():
    assert Schema.of("messages").known_columns() == {"messages", "images", "system", "tools", "label"}
    assert Schema.of("alpaca", ranking=True).known_columns() == {"instruction", "input", "history", "chosen",
                                                                 "rejected", "system"}


def test_check_reports_unknown_columns_and_ignored_ones(capsys, tmp_path, model_dir):
    path = _jsonl(tmp_path, [{"messages": CHAT, "id": 1}, {"messages": CHAT, "extra": 2}, {"messages": CHAT}])
    code = main(["data", "check", str(path), "--model", str(model_dir), "--ignore-columns", "id,source"])
    out = capsys.readouterr().out
    assert code == 1 and f"unknown column 'extra': 1 (first at {path}:2)" in out
    assert "ignored columns: id (1 rows); not in the data: source" in out


def test_a_first_row_with_a_typo_says_which_key(tmp_path):
    path = _jsonl(tmp_path, [{"instruction": "i", "outptu": "o"}])
    with pytest.raises(DataError, match="cannot tell the format.*'outptu' a misspelling of 'output'"):
        read_datasets([path])
