"""Long commands show progress: a live bar on a terminal, plain lines in a pipe or a log file."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers.terminal import Terminal

ROWS = [("who are you?", "I am the tunelab assistant."), ("what is 2+2?", "2+2 is 4."),
        ("name a color", "Blue is a color."), ("say hi", "hi there!")]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOSS = r"\d+\.\d{4}(?!\d)"  # rounded to 4 digits, never 17


@pytest.fixture()
def chat_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in ROWS]
    path.write_text("\n".join(json.dumps(r) for r in rows * 3) + "\n")
    return path


def _train(tiny_models, chat_file, out) -> list[str]:
    return [sys.executable, "-m", "tunelab", "train", f"model={tiny_models['llama']}", f"datasets={chat_file}",
            f"output={out}", "max_steps=4", "log_every=2", "data.cutoff_len=64", "micro_batch_size=2"]


def _data_check(tiny_models, chat_file) -> list[str]:
    return [sys.executable, "-m", "tunelab", "data", "check", str(chat_file), "--model", str(tiny_models["llama"])]


def test_train_and_data_check_draw_bars_on_a_terminal(tiny_models, chat_file, tmp_path):
    raw = _on_terminal(_train(tiny_models, chat_file, tmp_path / "run"))
    assert "\x1b[?25l" in raw  # the live display hid the cursor: a bar redrawn in place, not log lines
    shown = ANSI.sub("", raw)
    assert re.search(rf"train ━+ 4/4 loss {LOSS}\s+tok/s \d+ \S+ eta", shown), shown  # the bar's last frame
    assert set(re.findall(r"train [━╸╺]+ ([1-4])/4 loss", shown)) == {"1", "2", "3", "4"}  # drawn every step
    assert re.search(rf"train: step 4/4 loss {LOSS}\s+tok/s \d+ done in [\d.]+s", shown), shown
    assert re.search(rf"finished: step 4, loss {LOSS}, run dir", shown), shown

    shown = ANSI.sub("", _on_terminal(_data_check(tiny_models, chat_file)))
    assert re.search(r"tokenizing rows ━+ 12/12", shown), shown
    assert re.search(r"tokenizing rows: row 12/12 done in", shown) and "loss tokens:" in shown, shown


def _on_terminal(args: list[str]) -> str:
    """Everything the command wrote to its terminal, escape codes included."""
    term = Terminal(args)
    with pytest.raises(AssertionError):
        term.expect(r"(?!)", timeout=600)  # read until the command exits and closes the terminal
    assert term.close() == 0, term.output[-2000:]
    return term.output


def test_train_and_data_check_print_plain_lines_in_a_pipe(tiny_models, chat_file, tmp_path):
    proc = subprocess.run(_train(tiny_models, chat_file, tmp_path / "run"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "\x1b[" not in err and "━" not in err  # no escape codes or bars in a log
    assert re.search(rf"^train: step 2/4 loss {LOSS}\s+tok/s \d+ eta \S+$", err, re.M), err
    assert re.search(rf"^train: step 4/4 loss {LOSS}\s+tok/s \d+ done in [\d.]+s$", err, re.M), err
    assert re.search(rf"^finished: step 4, loss {LOSS}, run dir", err, re.M), err
    assert "FutureWarning" not in err and "Loading weights" not in err  # no library noise in a log

    proc = subprocess.run(_data_check(tiny_models, chat_file), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^tokenizing rows \.\.\.$", proc.stderr, re.M), proc.stderr
    assert re.search(r"^tokenizing rows: row 12/12 done in", proc.stderr, re.M), proc.stderr
    assert "\x1b[" not in proc.stderr and "loss tokens:" in proc.stdout
