"""The web UI's JSON API on a bare FastAPI app: runs, form validation, uploads, auth, jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tunelab.ui.jobs import JobManager
from tunelab.ui.api import mount_ui


def _write_run(root: Path, name: str, steps: int, state: str = "running") -> Path:
    run = root / name
    run.mkdir(parents=True)
    now = time.time()
    status = {"state": state, "pid": 0, "step": steps, "total_steps": 4 * steps, "method": "lora",
              "base_model_spec": "tiny", "started": now - 10.0, "updated": now}
    (run / "status.json").write_text(json.dumps(status))
    rows = [json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-4, "tokens_per_s": 50.0}) for s in range(1, steps + 1)]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (run / "train.log").write_text("".join(f"line {i}\n" for i in range(500)))
    return run


@pytest.fixture()
def ui(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    app = FastAPI()
    ctx = mount_ui(app, api_key="k3y", runs_dir=runs)
    client = TestClient(app, headers={"Authorization": "Bearer k3y"})
    yield client, runs
    ctx.jobs.shutdown(timeout_s=5)


def test_api_needs_the_key_but_pages_do_not(ui):
    client, _ = ui
    bare = TestClient(client.app)
    assert bare.get("/ui/api/runs").status_code == 401
    assert bare.get("/ui/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    page = bare.get("/ui/")
    assert page.status_code == 200 and "<title>tunelab</title>" in page.text
    assert bare.get("/ui/js/app.js").status_code == 200
    assert bare.get("/ui", follow_redirects=False).headers["location"].endswith("/ui/")


def test_runs_list_detail_metrics_since_and_log_tail(ui):
    client, runs = ui
    _write_run(runs, "alpha", steps=5)
    listed = client.get("/ui/api/runs").json()["runs"]
    assert [r["name"] for r in listed] == ["alpha"] and listed[0]["state"] == "running"
    detail = client.get("/ui/api/runs/alpha").json()
    assert detail["step"] == 5 and detail["total_steps"] == 20
    assert 25.0 < detail["eta_s"] < 35.0  # 10 s for 5 steps -> 30 s for the 15 left
    first = client.get("/ui/api/runs/alpha/metrics").json()
    assert [r["step"] for r in first["rows"]] == [1, 2, 3, 4, 5] and first["next"] == 5
    with open(runs / "alpha" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 0.4}) + "\n" + '{"step": 7, "lo')  # 7 is half-written
    more = client.get("/ui/api/runs/alpha/metrics", params={"since": first["next"]}).json()
    assert [r["step"] for r in more["rows"]] == [6] and more["next"] == 6
    log = client.get("/ui/api/runs/alpha/log", params={"lines": 3}).json()["lines"]
    assert log == ["line 497", "line 498", "line 499"]


def test_run_detail_gives_the_tensorboard_command_once_event_files_exist(ui):
    client, runs = ui
    run = _write_run(runs, "tb", steps=1)
    assert client.get("/ui/api/runs/tb").json()["tensorboard_command"] is None
    (run / "tensorboard").mkdir()
    assert client.get("/ui/api/runs/tb").json()["tensorboard_dir"] is None  # report_to made it, nothing written yet
    (run / "tensorboard" / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    detail = client.get("/ui/api/runs/tb").json()
    assert detail["tensorboard_dir"] == str((run / "tensorboard").resolve())
    assert detail["tensorboard_command"] == f"tensorboard --logdir {detail['tensorboard_dir']}"
    assert detail["tensorboard_download"] == "/ui/api/runs/tb/tensorboard/download"


def test_tensorboard_link_downloads_logs_that_tensorboard_reads(ui, tmp_path):
    """The run page's link: a zip of RUN/<event files>, whose scalars are the run's metrics."""
    import io
    import zipfile

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunelab.train.trackers import TensorBoard

    client, runs = ui
    run = _write_run(runs, "tb", steps=3)
    assert client.get("/ui/api/runs/tb/tensorboard/download").status_code == 404  # none written yet
    writer = TensorBoard(run, {"method": "lora"})  # what report_to: tensorboard writes
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        writer.log(row)
    writer.finish(run / "adapter")
    link = client.get("/ui/api/runs/tb").json()["tensorboard_download"]
    assert TestClient(client.app).get(link).status_code == 401  # behind the key, like every download
    res = TestClient(client.app).get(link, params={"key": "k3y"})  # a plain <a href> sends it this way
    assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
    assert 'filename="tb-tensorboard.zip"' in res.headers["content-disposition"]
    zipfile.ZipFile(io.BytesIO(res.content)).extractall(tmp_path / "unzipped")
    events = EventAccumulator(str(tmp_path / "unzipped" / "tb"))
    events.Reload()
    got = events.Scalars("train/loss")
    assert [e.step for e in got] == [r["step"] for r in rows]
    assert [e.value for e in got] == pytest.approx([r["loss"] for r in rows], rel=1e-6)  # stored as float32


def test_unknown_or_unsafe_run_names_are_rejected(ui):
    client, _ = ui
    assert client.get("/ui/api/runs/nope").status_code == 404
    assert client.get("/ui/api/runs/.hidden").status_code == 400
    bad = client.post("/ui/api/runs/plan", json={"name": "../evil", "datasets": ["x"]})
    assert bad.status_code == 400


def test_plan_turns_the_form_into_cli_and_yaml(ui, tmp_path):
    client, runs = ui
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    form = {"name": "r1", "model": "tiny", "datasets": [str(data)], "method": "dora", "lr": "1e-3",
            "lora.rank": "8", "lora.dropout": "0.05", "lora.target_modules": " q_proj, v_proj ",
            "data.cutoff_len": "128", "data.template": "chatml", "epochs": ""}
    plan = client.post("/ui/api/runs/plan", json=form).json()
    assert plan["cli"] == (f"tunelab train model=tiny datasets={data} method=dora lr=1e-3 lora.rank=8 "
                           f"lora.dropout=0.05 lora.target_modules=q_proj,v_proj data.cutoff_len=128 "
                           f"data.template=chatml output={runs / 'r1'}")
    import yaml

    assert yaml.safe_load(plan["yaml"]) == {"model": "tiny", "datasets": [str(data)], "method": "dora", "lr": 0.001,
                                            "lora": {"rank": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
                                            "data": {"cutoff_len": 128, "template": "chatml"},
                                            "output": str(runs / "r1")}
    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, plan["args"])  # what the started job's `tunelab train` reads
    assert (cfg.lora.target_modules, cfg.lora.dropout, cfg.data.template) == (["q_proj", "v_proj"], 0.05, "chatml")


def test_train_choices_are_the_builtin_templates(ui):
    from tunelab.data.builtin_templates import BUILTINS

    client, _ = ui
    assert client.get("/ui/api/train/choices").json() == {"data.template": list(BUILTINS)}


@pytest.mark.parametrize("change, field, words", [
    ({"datasets": []}, "datasets", "upload a file or give a path"),
    ({"datasets": ["/no/such/file.jsonl"]}, "datasets", "not found"),
    ({"lr": "fast"}, "lr", "expected float"),
    ({"lora.rank": "2.5"}, "lora.rank", "lora.rank"),
    ({"method": "magic"}, "method", "not one of"),
    ({"epochs": "0"}, "epochs", "epochs must be >= 1"),
    ({"lora.dropout": "1.5"}, "lora.dropout", "lora.dropout must be in [0, 1)"),
    ({"data.template": "vicuna"}, "data.template", "template 'vicuna' is not one of"),
    ({"name": "a b"}, "name", "run name"),
])
def test_bad_form_values_name_the_field_and_start_nothing(ui, tmp_path, change, field, words):
    client, runs = ui
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    form = {"name": "bad", "datasets": [str(data)], **change}
    res = client.post("/ui/api/runs", json=form)
    assert res.status_code == 400
    err = res.json()["error"]
    assert err["field"] == field and words in err["message"]
    assert client.get("/ui/api/jobs").json()["jobs"] == []
    assert not (runs / "bad").exists()


def test_chunked_upload_lands_whole_and_atomically(ui, tunelab_home):
    client, _ = ui
    first = client.post("/ui/api/uploads", params={"filename": "my data.jsonl", "last": "false"}, content=b"abc")
    upload_id = first.json()["upload"]
    assert "path" not in first.json()
    done = client.post("/ui/api/uploads", params={"filename": "my data.jsonl", "upload": upload_id, "last": "true"},
                       content=b"def\n").json()
    path = Path(done["path"])
    assert path.read_bytes() == b"abcdef\n" and path.name.endswith("my_data.jsonl")
    assert path.parent == Path(tunelab_home) / "uploads" and not list(path.parent.glob("*.part"))
    empty = client.post("/ui/api/uploads", params={"filename": "e.jsonl"}, content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    forged = client.post("/ui/api/uploads", params={"filename": "x", "upload": "../../etc"}, content=b"x")
    assert forged.status_code == 400


def test_export_and_pull_forms_reject_bad_input(ui):
    client, _ = ui
    assert client.post("/ui/api/models/pull", json={"source": " "}).json()["error"]["field"] == "source"
    res = client.post("/ui/api/exports", json={"source": "m", "format": "zip"})
    assert res.status_code == 400 and "gguf, ollama" in res.json()["error"]["message"]


def test_job_manager_runs_the_cli_in_its_own_process(tmp_path):
    jobs = JobManager(tmp_path / "jobs")
    ok = jobs.start("probe", ["--help"], {"x": 1})
    bad = jobs.start("probe", ["no-such-command"])
    for job in (ok, bad):
        job.process.wait(30)
    deadline = time.time() + 10
    while (ok.ended is None or bad.ended is None) and time.time() < deadline:
        time.sleep(0.05)  # the reader thread records the end after the pipe closes
    assert ok.state == "finished" and ok.progress == 100.0
    assert "usage: tunelab" in ok.log_path.read_text()
    assert bad.state == "failed" and bad.returncode == 2 and "invalid choice" in bad.error_line()
    assert jobs.find("probe", x=1) is ok


def test_progress_is_read_from_redrawn_bars_and_stop_marks_stopped(tmp_path):
    script = ("import sys, time\n"
              "for p in (10, 45): sys.stdout.write(f'\\rpull: {p}%|###'); sys.stdout.flush()\n"
              "time.sleep(60)\n")
    jobs = JobManager(tmp_path / "jobs", program=[sys.executable, "-c", script])
    job = jobs.start("pull", [])
    deadline = time.time() + 20
    while job.progress != 45.0 and time.time() < deadline:
        time.sleep(0.05)
    assert job.progress == 45.0 and job.state == "running"
    jobs.stop(job, timeout_s=10)
    while job.ended is None and time.time() < deadline:
        time.sleep(0.05)
    assert job.state == "stopped" and job.to_dict()["error"] is None


def test_models_list_shows_template_and_remove_goes_through_tunelab_rm(ui):
    from tunelab.data.templates import ChatTemplate
    from tunelab.store import ModelEntry, Store

    client, _ = ui
    store = Store()
    path = store.model_path("ui-test-model")
    path.mkdir(parents=True)
    ChatTemplate.builtin("chatml").save(path)
    store.add(ModelEntry(name="ui-test-model", path=str(path), architecture="LlamaForCausalLM", size_bytes=1234))
    rows = {m["name"]: m for m in client.get("/ui/api/models").json()["models"]}
    assert rows["ui-test-model"]["template"] == "chatml" and rows["ui-test-model"]["size_bytes"] == 1234
    assert client.delete("/ui/api/models/ui-test-model").json() == {"removed": "ui-test-model"}
    assert store.get("ui-test-model") is None
    missing = client.delete("/ui/api/models/ui-test-model")
    assert missing.status_code == 400 and missing.json()["error"]["message"]
