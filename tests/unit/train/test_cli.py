"""`tunelab train` / `tunelab runs` through the CLI, with data files read by the data layer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import QUESTIONS
from tunelab.cli import main


@pytest.fixture()
def chat_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QUESTIONS]
    path.write_text("\n".join(json.dumps(r) for r in rows * 4) + "\n")
    return path


def test_train_from_yaml_and_overrides_then_list_runs(tiny_models, chat_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"model: {tiny_models['llama']}\ndatasets: [{chat_file}]\nmax_steps: 50\nlr: 0.01\n"
                    "data:\n  cutoff_len: 64\n")
    assert main(["train", "--config", str(yaml), "max_steps=3", "output=runs/demo", "eval_split=0.2"]) == 0
    saved = (tmp_path / "runs/demo/config.yaml").read_text()
    assert "max_steps: 3" in saved and "cutoff_len: 64" in saved  # CLI beat YAML, YAML beat defaults
    assert (tmp_path / "runs/demo/adapter/adapter_model.safetensors").exists()
    capsys.readouterr()
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "finished" in out and "3/3" in out


def test_bad_input_is_one_line_error(tiny_models, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    code = main(["train", f"model={tiny_models['llama']}", f"datasets={bad}", f"output={tmp_path}/r"])
    err = capsys.readouterr().err
    assert code == 1 and "bad.jsonl" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "lorra.rank=4"]) == 1
    assert "did you mean 'lora'" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_and_resume_continues(tiny_models, chat_file, tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "tunelab", "train", f"model={tiny_models['llama']}", f"datasets={chat_file}",
           f"output={run}", "max_steps=100000", "data.cutoff_len=64", "micro_batch_size=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _metric_lines(run) >= 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped"
    from tunelab.train.checkpoint import list_checkpoints, verify

    last = list_checkpoints(run / "checkpoints")[-1]
    verify(last)
    assert last.name == f"step-{status['step']}"
    stopped_at = status["step"]
    assert main(["train", "--resume", str(run), f"max_steps={stopped_at + 2}"]) == 0
    assert json.loads((run / "status.json").read_text())["step"] == stopped_at + 2


def _metric_lines(run) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_bad_data_leaves_no_run_folder_behind(tiny_models, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    args = ["train", f"model={tiny_models['llama']}", f"datasets={bad}"]
    assert main([*args, f"output={tmp_path}/runs/r"]) == 1
    assert not (tmp_path / "runs/r").exists()
    mine = tmp_path / "mine"  # an existing folder keeps what was there before, and only that
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main([*args, f"output={mine}"]) == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert "bad.jsonl" in capsys.readouterr().err


def test_a_killed_trainer_shows_as_crashed_in_runs(tiny_models, chat_file, tmp_path, capsys):
    run = tmp_path / "runs" / "killed"
    cmd = [sys.executable, "-m", "tunelab", "train", f"model={tiny_models['llama']}", f"datasets={chat_file}",
           f"output={run}", "max_steps=100000", "data.cutoff_len=64", "micro_batch_size=1"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and _metric_lines(run) < 1:
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no handler runs, status.json still says running
    proc.wait()
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if "killed" in line]
    assert row and "crashed" in row[0]


def test_plain_train_holds_out_an_eval_split(tiny_models, chat_file, tmp_path):
    run = tmp_path / "plain"
    assert main(["train", f"model={tiny_models['llama']}", f"datasets={chat_file}", f"output={run}",
                 "max_steps=2", "data.cutoff_len=64"]) == 0  # no eval keys at all
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert isinstance(rows[-1].get("eval_loss"), float)
    assert "eval_split: 0.05" in (run / "config.yaml").read_text()
