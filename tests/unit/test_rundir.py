"""The run directory owner: states, liveness by pid + start time, stop, corrupt and missing status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tunelab import process
from tunelab.cli import main
from tunelab.errors import RunError
from tunelab.rundir import Run, list_runs, runs_for_model
from tunelab.serve.watch import crashed_runs, finished_adapters
from tunelab.ui.api import mount_ui


@pytest.fixture()
def sleeper():
    """An unrelated process, as a stranger that may have reused a dead trainer's PID."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _run(root: Path, name: str, **status) -> Run:
    run = Run(root / name)
    run.path.mkdir(parents=True)
    run.update_status(**{"state": "running", "step": 3, "total_steps": 9, "started": time.time(), **status})
    return run


def test_a_reused_pid_is_a_crashed_run_and_stop_leaves_the_stranger_alone(sleeper, tmp_path, capsys):
    real = process.start_token(sleeper.pid)
    assert real is not None
    run = _run(tmp_path / "runs", "reused", pid=sleeper.pid, pid_start=str(int(real) + 1))
    assert run.state == "crashed" and not run.is_alive
    assert run.stop() is False
    app = FastAPI()
    ctx = mount_ui(app, runs_dir=tmp_path / "runs")
    client = TestClient(app)
    try:
        reply = client.post("/ui/api/runs/reused/stop")
        assert reply.status_code == 409 and "crashed" in reply.text
        assert client.get("/ui/api/runs").json()["runs"][0]["state"] == "crashed"
    finally:
        ctx.jobs.shutdown(timeout_s=5)
    time.sleep(0.2)
    assert sleeper.poll() is None, "Stop signalled a process that is not the run's trainer"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert "crashed" in capsys.readouterr().out


def test_stop_signals_the_runs_own_process(sleeper, tmp_path):
    run = _run(tmp_path, "mine", pid=sleeper.pid, pid_start=process.start_token(sleeper.pid))
    assert run.state == "running" and run.is_alive
    assert run.stop() is True
    assert sleeper.wait(timeout=10) == -signal.SIGTERM


def test_a_killed_trainer_reads_as_crashed_even_before_it_is_reaped(sleeper, tmp_path):
    run = _run(tmp_path, "killed", pid=sleeper.pid, pid_start=process.start_token(sleeper.pid))
    os.kill(sleeper.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while process.start_token(sleeper.pid) is not None and time.time() < deadline:
        time.sleep(0.05)  # not waited for yet: a zombie, which is dead all the same
    assert run.state == "crashed"
    sleeper.wait()
    assert run.state == "crashed"  # and once reaped, the pid is gone


def test_this_process_owns_what_it_marks(tmp_path):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    status = run.mark_owner("running", step=0)
    assert status["pid"] == os.getpid() and status["pid_start"] == process.start_token(os.getpid())
    assert run.state == "running" and run.is_alive
    run.update_status(state="finished")
    assert run.state == "finished" and not run.is_alive and run.stop() is False


def test_missing_status_is_new_and_corrupt_status_names_the_file(tmp_path, capsys):
    run = Run(tmp_path / "runs" / "empty")
    run.path.mkdir(parents=True)
    assert run.state == "new" and run.status() == {} and list_runs(tmp_path / "runs") == []
    bad = Run(tmp_path / "runs" / "bad")
    bad.path.mkdir()
    bad.status_file.write_text("{not json")
    assert bad.state == "corrupt"
    with pytest.raises(RunError, match=r"bad/status\.json: cannot read JSON"):
        bad.status()
    _run(tmp_path / "runs", "good", state="finished", pid=None)
    assert main(["runs", str(tmp_path / "runs")]) == 0  # one corrupt run does not hide the others
    out = capsys.readouterr().out
    assert "good" in out and "corrupt" in out and "bad/status.json" in out.replace("\n", "")


def test_metrics_skip_torn_lines_and_count_from_a_line(tmp_path):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    run.append_metrics({"step": 1, "loss": 2.0})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n{"step": 4')  # a crash mid-line, then a write in flight
    assert [r["step"] for r in run.metrics()] == [1, 3]
    rows, nxt = run.read_metrics(since=2)
    assert [r["step"] for r in rows] == [3] and nxt == 3


def test_runs_for_model_and_watch_see_only_what_they_should(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for name, state in (("done", "finished"), ("dead", "running")):
        run = _run(tmp_path / "runs", name, state=state, base_model=str(base), pid=2**22 + 1)
        (run.path / "adapter").mkdir()
        (run.path / "adapter" / "adapter_config.json").write_text("{}")
    _run(tmp_path / "runs", "other", state="finished", base_model=str(tmp_path / "elsewhere"))
    assert sorted(r.name for r in runs_for_model(base, tmp_path / "runs")) == ["dead", "done"]
    assert Run(tmp_path / "runs" / "dead").state == "crashed"
    assert list(finished_adapters(tmp_path / "runs")) == ["done"]
    assert crashed_runs(tmp_path / "runs") == ["dead"]


def test_start_token_survives_odd_command_names(tmp_path):
    odd = tmp_path / "a b) c"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"])
    try:
        token = process.start_token(proc.pid)
        assert token is not None and token.isdigit()
        assert process.owner_alive({"pid": proc.pid, "pid_start": token})
    finally:
        proc.kill()
        proc.wait()
    assert not process.owner_alive({"pid": proc.pid, "pid_start": token})
    assert json.loads(json.dumps(process.owner()))["host"]


def test_show_lists_the_runs_trained_on_a_model(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    _run(tmp_path / "runs", "on-llama", state="finished", base_model=str(tiny_models["llama"]), final_loss=1.25,
         method="dora")
    _run(tmp_path / "runs", "on-qwen", state="finished", base_model=str(tiny_models["qwen2"]))
    assert main(["show", str(tiny_models["llama"]), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "on-llama  finished  dora  final_loss=1.25" in out and "on-qwen" not in out


def test_stop_refuses_to_guess_without_a_recorded_start_time(sleeper, tmp_path):
    run = _run(tmp_path, "legacy", pid=sleeper.pid)  # as written before start times were recorded
    with pytest.raises(RunError, match="no process start time recorded"):
        run.stop()
    assert sleeper.poll() is None
