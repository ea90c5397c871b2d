"""`tunelab data check|preview|convert`, run through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.demo import demo_heldout_path, demo_train_path
from tunelab.data.formats import read_datasets

ASSETS = Path(__file__).parents[2] / "assets" / "data"


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["data", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def _line_count(path) -> int:
    """Rows of a JSONL file, counted independently of tunelab's readers."""
    return sum(1 for line in open(path, encoding="utf-8") if line.strip())


def test_check_reports_on_the_demo_dataset(capsys, model_dir):
    code, out = _run(capsys, "check", demo_train_path(), "--model", model_dir)
    assert code == 0, out
    rows = _line_count(demo_train_path())
    assert f"rows: {rows} valid (messages {rows})" in out and "rejected: 0" in out
    assert "chat template: the model's own" in out
    percentiles = dict(p.split() for p in out.split("tokens per row: ")[1].splitlines()[0].split("  "))
    assert 20 < int(percentiles["p50"]) <= int(percentiles["p90"]) <= int(percentiles["max"]) < 300
    share = float(out.split("loss tokens: ")[1].split("(")[1].split("%")[0])
    assert 20 < share < 90


def test_check_counts_rejects_duplicates_empty_and_over_cutoff(capsys, model_dir, tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}
    empty = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": " "}]}
    long = {"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]}
    lines = [json.dumps(good), "{oops", json.dumps(good), json.dumps(empty), '{"messages": 3}', json.dumps(long), "[1]"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out = _run(capsys, "check", path, "--model", model_dir, "--cutoff", 60, "--overflow", "drop")
    assert code == 1
    assert "rejected: 3" in out and f"malformed JSON: 1 (first at {path}:2)" in out
    assert f"wrong type: 2 (first at {path}:5, {path}:7)" in out
    assert f"duplicates: 1 (first at {path}:3)" in out and f"empty replies: 1 (first at {path}:4)" in out
    assert "over cutoff (60): 1 -> 0 truncated at a turn boundary, 1 dropped" in out
    assert "examples: 3 of 4 rows" in out and "--skip-invalid" in out
    code, _ = _run(capsys, "check", path, "--model", model_dir, "--skip-invalid")
    assert code == 0


def test_check_fails_on_zero_trainable_tokens(capsys, model_dir):
    code, out = _run(capsys, "check", ASSETS / "sharegpt.jsonl", "--model", model_dir, "--cutoff", 8)
    assert code == 1 and "no trainable tokens" in out


@pytest.mark.parametrize("target", ["messages", "alpaca", "sharegpt"])
@pytest.mark.parametrize("source", ["alpaca.json", "sharegpt.jsonl", "messages.jsonl", "alpaca.csv"])
def test_convert_then_check_keeps_every_row(capsys, tmp_path, model_dir, source, target):
    out_path = tmp_path / f"out-{target}.jsonl"
    code, out = _run(capsys, "convert", ASSETS / source, out_path, "--to", target)
    assert code == 0, out
    before, after = read_datasets([ASSETS / source]), read_datasets([out_path])
    assert after.counts == {target: len(before.rows)}
    assert [r.messages for r in after.rows] == [r.messages for r in before.rows]
    code, out = _run(capsys, "check", out_path, "--model", model_dir)
    assert code == 0 and f"rows: {len(before.rows)} valid" in out


def test_convert_writes_json_arrays_and_nothing_on_failure(capsys, tmp_path):
    code, _ = _run(capsys, "convert", demo_heldout_path(), tmp_path / "held.json", "--to", "alpaca")
    assert code == 0 and len(json.loads((tmp_path / "held.json").read_text())) == _line_count(demo_heldout_path())
    code, out = _run(capsys, "convert", ASSETS / "text.jsonl", tmp_path / "t.jsonl", "--to", "alpaca")
    assert code == 1 and "text.jsonl:1: a plain-text row cannot become alpaca" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "held.json"]


def test_preview_highlights_exactly_the_replies(capsys, model_dir):
    from transformers import AutoTokenizer

    from tunelab.data.config import DataConfig
    from tunelab.data.preview import TRAINED_STYLE, preview_row
    from tunelab.data.templates import ChatTemplate

    row = read_datasets([ASSETS / "sharegpt.jsonl"]).rows[1]
    text = preview_row(row, ChatTemplate.for_model(model_dir), AutoTokenizer.from_pretrained(model_dir), DataConfig())
    trained = [text.plain[s.start:s.end] for s in text.spans if s.style == TRAINED_STYLE]
    assert trained == ["你好！<|im_end|>\n", "再见！<|im_end|>\n"]
    code, out = _run(capsys, "preview", ASSETS / "sharegpt.jsonl", "-n", 1, "--model", model_dir)
    assert code == 0 and "sharegpt.jsonl:1 (sharegpt)" in out and "sharegpt.jsonl:2" not in out


def test_demo_heldout_questions_are_not_in_training():
    train = {r.messages[0]["content"] for r in read_datasets([demo_train_path()]).rows}
    held = read_datasets([demo_heldout_path()]).rows
    assert len(held) >= 10 and not {r.messages[-2]["content"] for r in held} & train
    assert any("tunelab" in r.messages[-1]["content"] for r in held)
    assert any("你" in r.messages[-2]["content"] for r in held)
