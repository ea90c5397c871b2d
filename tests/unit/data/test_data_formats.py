"""Readers: every format and file type, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets

ASSETS = Path(__file__).parents[2] / "assets" / "data"
USER_BOT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize("name,fmt,rows", [
    ("alpaca.json", "alpaca", 3), ("alpaca.csv", "alpaca", 3), ("sharegpt.jsonl", "sharegpt", 2),
    ("messages.jsonl", "messages", 2), ("prompt_completion.jsonl", "prompt_completion", 2),
    ("pairs.tsv", "prompt_completion", 2), ("text.jsonl", "text", 2),
])
def test_each_format_and_file_type(name, fmt, rows):
    loaded = read_datasets([ASSETS / name])
    assert loaded.counts == {fmt: rows} and not loaded.rejected
    for row in loaded.rows:
        assert (row.text is None) != (row.messages is None)
        assert row.source.endswith(name) and row.line >= 1


def test_alpaca_history_system_and_input():
    rows = read_datasets([ASSETS / "alpaca.json"]).rows
    assert rows[0].messages[0] == {"role": "user", "content": "Translate to French.\nGood morning"}
    assert rows[1].messages[0] == {"role": "system", "content": "Answer with a number."}
    assert [m["content"] for m in rows[2].messages] == ["What is 2 + 2?", "4", "And times 3?", "12"]
    assert [r.line for r in rows] == [2, 3, 4]


def test_sharegpt_roles_and_text_parts():
    chat = read_datasets([ASSETS / "sharegpt.jsonl"]).rows
    assert [m["role"] for m in chat[0].messages] == ["system", "user", "assistant"]
    assert chat[1].messages[3] == {"role": "assistant", "content": "再见！"}
    assert read_datasets([ASSETS / "messages.jsonl"]).rows[1].messages[0]["content"] == "Two parts"


def test_turn_keys_follow_each_turn_not_the_column_name(tmp_path):
    path = _write(tmp_path, "mixed.jsonl", [
        {"messages": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
    ])
    rows = read_datasets([path]).rows
    assert [r.messages[1]["content"] for r in rows] == ["b", "d"]


def test_plain_text_file_is_one_row_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"First line.\n\nSecond line.\r\nbad \xff\n")
    loaded = read_datasets([path], skip_invalid=True)
    assert [(r.line, r.text) for r in loaded.rows] == [(1, "First line."), (3, "Second line.")]
    assert loaded.rejected == {"not UTF-8": [(str(path), 4)]}


def test_csv_multiline_cells_keep_their_line_numbers():
    rows = read_datasets([ASSETS / "alpaca.csv"]).rows
    assert [r.line for r in rows] == [2, 3, 4]
    assert rows[2].messages[1]["content"] == "Multi-line\nanswer"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"messages": USER_BOT}, {"messages": USER_BOT[:1] + [{"role": "assistant", "content": "Yo"}]}])
    pq.write_table(table, tmp_path / "chat.parquet")
    loaded = read_datasets([tmp_path / "chat.parquet"])
    assert loaded.counts == {"messages": 2} and loaded.rows[1].messages[1]["content"] == "Yo"


def test_directory_reads_everything_including_dataset_info():
    loaded = read_datasets([ASSETS])
    assert loaded.counts == {"alpaca": 7, "messages": 2, "prompt_completion": 4, "sharegpt": 3, "text": 2}


def test_dataset_info_columns_tags_and_names():
    info = ASSETS / "llamafactory" / "dataset_info.json"
    chat = read_datasets([f"{info}#chat_custom"]).rows
    assert chat[0].messages == [{"role": "system", "content": "Support desk."},
                                {"role": "user", "content": "My order?"},
                                {"role": "assistant", "content": "On its way."}]
    qa = read_datasets([f"{info}#qa_custom"]).rows
    assert qa[0].messages[0]["content"] == "What is tunelab?"
    with pytest.raises(DataError, match="no dataset named 'nope'"):
        read_datasets([f"{info}#nope"])


def test_forced_format(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "t", "instruction": "i", "output": "o"}) + "\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: field 'text': unknown column"):  # never dropped silently
        read_datasets([path])
    assert read_datasets([path], ignore_columns=["text"]).counts == {"alpaca": 1}
    assert read_datasets([path], format="text", ignore_columns=["instruction", "output"]).counts == {"text": 1}
    with pytest.raises(DataError, match="unknown format 'yaml'"):
        read_datasets([path], format="yaml")


def _write(tmp_path, name, lines: list) -> Path:
    path = tmp_path / name
    body = b"".join((x if isinstance(x, bytes) else json.dumps(x, ensure_ascii=False).encode()) + b"\n" for x in lines)
    path.write_bytes(body)
    return path


GOOD = {"messages": USER_BOT}
BAD_CASES = [
    ("malformed JSON", b'{"messages": [', None, "malformed JSON at column"),
    ("wrong type", {"instruction": "q", "output": 3}, "output", "expected a string, got int"),
    ("wrong type", ["not", "an", "object"], None, "expected a JSON object"),
    ("missing field", {"instruction": "q", "input": "x"}, "messages", "missing"),  # read like the file's other rows
    ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown role 'robot'"),
    ("turns do not alternate", {"messages": [USER_BOT[0], USER_BOT[0], USER_BOT[1]]}, "messages[1]", "'user' but 'assistant'"),
    ("no reply", {"messages": USER_BOT + [USER_BOT[0]]}, "messages[2]", "not from the assistant"),
    ("empty conversation", {"messages": []}, "messages", "no turns"),
    ("not UTF-8", b'{"text": "caf\xe9"}', None, "not UTF-8 at column 14"),
]


@pytest.mark.parametrize("reason,bad,field,message", BAD_CASES)
def test_bad_row_names_file_line_and_field(tmp_path, reason, bad, field, message):
    path = _write(tmp_path, "bad.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        read_datasets([path])
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text
    if field:
        assert f"field '{field}'" in text
    loaded = read_datasets([path], skip_invalid=True)
    assert len(loaded.rows) == 3 and loaded.rejected == {reason: [(str(path), 3)]}


def test_empty_file_and_blank_lines(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: file has no rows"):
        read_datasets([empty])
    good = _write(tmp_path, "good.jsonl", [GOOD])
    loaded = read_datasets([good, empty], skip_invalid=True)
    assert len(loaded.rows) == 1 and loaded.rejected == {"empty file": [(str(empty), 0)]}
    with pytest.raises(DataError, match="no such file"):
        read_datasets([tmp_path / "missing.jsonl"])


def test_fifty_megabyte_line_is_rejected_without_loading_it(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps(GOOD).encode() + b"\n")
        f.write(b'{"text": "' + b"x" * (50 * 2**20) + b'"}\n')
        f.write(json.dumps(GOOD).encode() + b"\n")
    with pytest.raises(DataError, match=r"huge.jsonl:2: line is longer than 16 MiB"):
        read_datasets([path])
    loaded = read_datasets([path], skip_invalid=True)
    assert [r.line for r in loaded.rows] == [1, 3] and loaded.rejected == {"line too long": [(str(path), 2)]}


def test_json_array_errors_name_the_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": 5},\n  {"text": "c"\n]')
    loaded = read_datasets([path], skip_invalid=True)
    assert loaded.rejected == {"wrong type": [(str(path), 3)], "malformed JSON": [(str(path), 5)]}
    with pytest.raises(DataError, match=r"arr.json:3: field 'text': expected a string, got int"):
        read_datasets([path])


def test_csv_missing_column_and_bad_bytes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"instruction,answer\nq1,a1\nq\xff2,a2\n")
    with pytest.raises(DataError, match=r"t.csv:2: field 'output': missing"):
        read_datasets([path], format="alpaca")
    ok = tmp_path / "u.csv"
    ok.write_bytes(b"prompt,completion\nq1,a1\nq\xff2,a2\n")
    loaded = read_datasets([ok], skip_invalid=True)
    assert len(loaded.rows) == 1 and loaded.rejected == {"not UTF-8": [(str(ok), 3)]}


def test_hub_datasets_in_dataset_info_are_refused_clearly(tmp_path):
    shutil.copytree(ASSETS / "llamafactory", tmp_path / "lf")
    (tmp_path / "lf" / "dataset_info.json").write_text(json.dumps({"remote": {"hf_hub_url": "org/data"}}))
    with pytest.raises(DataError, match="remote: hub datasets are not read offline"):
        read_datasets([tmp_path / "lf" / "dataset_info.json"])


def test_byte_order_mark_and_config_validation(tmp_path):
    from tunelab.config import build
    from tunelab.data.config import DataConfig
    from tunelab.errors import ConfigError

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert read_datasets([path]).counts == {"messages": 1}
    assert build(DataConfig, {"cutoff_len": "512", "train_on": "last"}).cutoff_len == 512
    for bad, match in [({"format": "yaml"}, "format 'yaml'"), ({"template": "vicuna"}, "template 'vicuna'"),
                       ({"train_on": "prompt"}, "train_on"), ({"cutoff": 5}, "did you mean 'cutoff_len'")]:
        with pytest.raises(ConfigError, match=match):
            build(DataConfig, bad)
