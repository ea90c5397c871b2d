"""report_to: each tracker, run offline, holds exactly the rows of metrics.jsonl, the config and
the final adapter path (read back through the tool's own files)."""

from __future__ import annotations

import glob
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from tunelab.config import load_config
from tunelab.errors import MissingExtra
from tunelab.rundir import Run
from tunelab.train.config import TrainConfig
from tunelab.train.trackers import TRACKERS, scalars

INSTALLED = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]
pytestmark = pytest.mark.slow  # one training run feeding four trackers (W&B and SwanLab start slowly)


@pytest.fixture(scope="module")
def tracked_run(tiny_models, tiny_examples, tmp_path_factory) -> Path:
    """One 3-step LoRA run reporting to every installed tracker, offline."""
    from tunelab.train.trainer import train

    if not INSTALLED:
        pytest.skip("no tracker library installed (pip install 'tunelab[tensorboard]' etc.)")
    out = tmp_path_factory.mktemp("tracked") / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("MLFLOW_TRACKING_URI", "SWANLAB_MODE"):  # their defaults: SQLite in the run, offline
            mp.delenv(key, raising=False)
        cfg = load_config(TrainConfig, None, [f"model={tiny_models['llama']}", f"output={out}", "max_steps=3",
                                              "micro_batch_size=2", "data.cutoff_len=64", "eval_split=0.25",
                                              f"report_to={','.join(INSTALLED)}"])
        train(cfg, examples=(tiny_examples[:12], tiny_examples[12:]))
    return out


def _expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] from metrics.jsonl."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in scalars(row).items():
            out.setdefault(key, []).append((row["step"], value))
    return out


def _need(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} is not installed (pip install 'tunelab[{name}]')")


def test_tensorboard_event_files_hold_the_metrics(tracked_run):
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = Run(tracked_run).tensorboard_logs()  # where the UI's run page points TensorBoard
    assert logs == tracked_run / "tensorboard"
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    expected = _expected(tracked_run)
    assert "eval_loss" in expected
    for key, rows in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert [s for s, _ in got] == [s for s, _ in rows]
        assert [v for _, v in got] == pytest.approx([v for _, v in rows], rel=1e-6)  # stored as float32
    texts = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    assert str(tracked_run / "adapter") in texts["adapter/text_summary"]
    assert "lora:" in texts["config/text_summary"]


def _wandb_records(path: str):
    """Records of a W&B offline .wandb file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = Path(path).read_bytes(), 7, b""  # 7-byte ':W&B' header
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_holds_the_metrics(tracked_run):
    _need("wandb")
    (path,) = glob.glob(str(tracked_run / "wandb" / "offline-run-*" / "run-*.wandb"))
    history: dict[str, list[tuple[int, float]]] = {}
    summary, config = {}, {}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, []).append((items.get("_step", record.history.step.num), value))
        elif kind == "summary":
            summary |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "run":  # the run record carries the config given to wandb.init
            config |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
    assert history == _expected(tracked_run)
    assert summary["adapter_path"] == str(tracked_run / "adapter")
    assert config["lora"]["rank"] == 16 and config["method"] == "lora"


def test_mlflow_store_holds_the_metrics(tracked_run):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
    for key, rows in _expected(tracked_run).items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert got == rows
    assert run.data.params["lora.rank"] == "16" and run.data.params["method"] == "lora"
    assert run.data.tags["adapter_path"] == str(tracked_run / "adapter")


def _swanlab_records(run: Path) -> list:
    """The records of a run's SwanLab file, read as `swanlab sync` reads them."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    (path,) = glob.glob(str(run / "swanlog" / "run-*" / "run-*.swanlab"))
    reader = DataStoreReader()
    reader.open(path)
    return [Record.FromString(raw) for raw in reader]


def test_swanlab_offline_run_holds_the_metrics(tracked_run):
    _need("swanlab")
    series: dict[str, list[tuple[int, float]]] = {}
    for record in _swanlab_records(tracked_run):
        if record.WhichOneof("record_type") == "scalar" and not record.scalar.key.startswith("__swanlab__"):
            series.setdefault(record.scalar.key, []).append((record.scalar.step, record.scalar.value.number))
    assert series == _expected(tracked_run)
    (run_dir,) = glob.glob(str(tracked_run / "swanlog" / "run-*"))
    config = Path(run_dir, "files", "config.yaml").read_text()
    assert str(tracked_run / "adapter") in config and "lora" in config


def test_a_missing_tracker_library_is_an_error_before_training(tiny_models, tmp_path, monkeypatch):
    from tunelab.train.trainer import train

    monkeypatch.setitem(sys.modules, "swanlab", None)  # as if it were not installed
    cfg = load_config(TrainConfig, None, [f"model={tiny_models['llama']}", f"output={tmp_path / 'run'}",
                                          "report_to=swanlab"])
    with pytest.raises(MissingExtra, match=r"tunelab\[swanlab\]"):
        train(cfg, examples=([], []))
    assert not (tmp_path / "run" / "status.json").exists()


def test_an_unknown_tracker_is_a_config_error():
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="report_to"):
        load_config(TrainConfig, None, ["report_to=comet"])



@pytest.fixture(scope="module")
def failed_run(tiny_models, tiny_examples, tracked_run, tmp_path_factory) -> Path:
    """A run whose step 2 raises (through the on_step hook), reporting to every installed tracker.

    MLflow writes to tracked_run's store (already migrated: a new SQLite store costs ~10 s)."""
    from tunelab.train.trainer import train

    out = tmp_path_factory.mktemp("failed") / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "SWANLAB_MODE": "offline",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tracked_run / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "failed"}

    def boom(row):
        if row["step"] == 2:
            raise RuntimeError("disk on fire")

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        cfg = load_config(TrainConfig, None, [f"model={tiny_models['llama']}", f"output={out}", "max_steps=3",
                                              "micro_batch_size=2", "data.cutoff_len=64",
                                              f"report_to={','.join(INSTALLED)}"])
        with pytest.raises(RuntimeError, match="disk on fire"):
            train(cfg, examples=(tiny_examples[:12], []), on_step=boom)
    return out


ERROR = "RuntimeError: disk on fire"


def test_a_failed_run_closes_tensorboard_with_the_error(failed_run):
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(failed_run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert events.Tensors("error/text_summary")[0].tensor_proto.string_val[0].decode() == ERROR


def test_a_failed_run_ends_the_wandb_run_with_exit_code_1(failed_run):
    _need("wandb")
    (path,) = glob.glob(str(failed_run / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = list(_wandb_records(path))
    exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    summary = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert exits == [1] and summary["error"] == ERROR


def test_a_failed_run_is_failed_in_mlflow(failed_run, tracked_run):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("failed").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error"] == ERROR
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]


def test_a_failed_run_is_crashed_in_swanlab(failed_run):
    _need("swanlab")
    (finish,) = [r.finish for r in _swanlab_records(failed_run) if r.WhichOneof("record_type") == "finish"]
    state = finish.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_number[finish.state].name
    assert state == "RUN_STATE_CRASHED" and finish.error == ERROR
