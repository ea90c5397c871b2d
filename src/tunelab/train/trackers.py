"""Experiment trackers (`report_to`): the rows of metrics.jsonl, the resolved config and the
final adapter path, sent through each tool's own library.

    tensorboard  event files in RUN/tensorboard/ (`Run.tensorboard_dir`, which the UI links to)
    wandb        wandb.init(dir=RUN); WANDB_MODE=offline keeps it on disk (RUN/wandb/)
    mlflow       MLFLOW_TRACKING_URI, else a SQLite store RUN/mlflow.db (MLflow 3 retired ./mlruns)
    swanlab      swanlab.init(logdir=RUN/swanlog); SWANLAB_MODE (default: offline, `swanlab sync` uploads)

Each is an optional extra; a missing one is an error before training starts. A run that fails
(or is killed) still closes every tracker, marked failed/killed, so none is left "running".
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

from tunelab.errors import MissingExtra
from tunelab.rundir import Run

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "swanlab": "swanlab"}
PROJECT = "tunelab"


def check_trackers(names: list[str]) -> None:
    """MissingExtra for the first tracker whose library is not installed."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise MissingExtra(PACKAGES[name], name, f"report_to: {name}")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a metrics.jsonl row, without its step and wall time."""
    return {k: float(v) for k, v in row.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (lists as text), for trackers with flat parameters."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


class TensorBoard:
    """SummaryWriter in RUN/tensorboard: one scalar tag per metric, the config as text."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Run(run_path).tensorboard_dir))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```")

    def log(self, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"train/{key}", value, row["step"])
        self.writer.flush()

    def finish(self, adapter: Path | None) -> None:
        self.writer.add_text("adapter", str(adapter or ""))
        self.writer.close()

    def fail(self, error: str, killed: bool) -> None:
        self.writer.add_text("error", error)
        self.writer.close()


class WandB:
    """One W&B run named after the run directory."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_path.name,
                              dir=str(run_path), config=config, reinit="finish_previous")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=row["step"])

    def finish(self, adapter: Path | None) -> None:
        self.run.summary["adapter_path"] = str(adapter or "")
        self.run.finish()

    def fail(self, error: str, killed: bool) -> None:
        self.run.summary["error"] = error
        self.run.finish(exit_code=130 if killed else 1)  # W&B shows a non-zero exit as failed


class MLflow:
    """One MLflow run: config as params, metrics by step, the adapter path as a tag."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_path / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run_path.name).info.run_id
        for key, value in flat(config).items():
            self.client.log_param(self.run_id, key, "" if value is None else str(value)[:6000])

    def log(self, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.client.log_metric(self.run_id, key, value, step=row["step"])

    def finish(self, adapter: Path | None) -> None:
        self.client.set_tag(self.run_id, "adapter_path", str(adapter or ""))
        self.client.set_terminated(self.run_id)

    def fail(self, error: str, killed: bool) -> None:
        self.client.set_tag(self.run_id, "error", error[:5000])
        self.client.set_terminated(self.run_id, status="KILLED" if killed else "FAILED")


class SwanLab:
    """One SwanLab experiment in RUN/swanlog, offline unless SWANLAB_MODE says otherwise (SwanLab's
    deprecated "local" mode needs its `swanboard` dashboard package, or it logs an error at start)."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        import swanlab

        self.swanlab = swanlab
        self.run = swanlab.init(project=PROJECT, experiment_name=run_path.name, config=config,
                                logdir=str(run_path / "swanlog"), mode=os.environ.get("SWANLAB_MODE", "offline"))

    def log(self, row: dict[str, Any]) -> None:
        self.swanlab.log(scalars(row), step=row["step"])

    def finish(self, adapter: Path | None) -> None:
        self.run.config["adapter_path"] = str(adapter or "")
        self.swanlab.finish()

    def fail(self, error: str, killed: bool) -> None:
        self.swanlab.finish(state="aborted" if killed else "crashed", error=error)


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow, "swanlab": SwanLab}


class Trackers:
    """The trackers of one run, fed from the one metrics writer."""

    def __init__(self, names: list[str], run_path: Path, config: dict[str, Any]):
        check_trackers(names)
        self.active: list = []
        try:
            for name in dict.fromkeys(names):
                self.active.append(TRACKERS[name](Path(run_path), config))
        except BaseException as err:  # the trackers already started are not left open
            self.fail(err)
            raise

    def log(self, row: dict[str, Any]) -> None:
        """One metrics row, as written to metrics.jsonl."""
        for tracker in self.active:
            tracker.log(row)

    def finish(self, adapter: Path | None) -> None:
        """Record the final adapter (or model) path and close every tracker."""
        for tracker in self.active:
            tracker.finish(adapter)
        self.active = []

    def fail(self, err: BaseException) -> None:
        """Close every tracker marked failed (killed, for Ctrl-C); `err` is what ended the run.

        A tracker that cannot close is a warning, so the others still close and `err` stays the error."""
        active, self.active = self.active, []
        killed = isinstance(err, KeyboardInterrupt)
        for tracker in active:
            try:
                tracker.fail(f"{type(err).__name__}: {err}", killed)
            except Exception as close_err:  # noqa: BLE001 - reported, the run's own error goes on
                warnings.warn(f"report_to: closing {type(tracker).__name__} failed: {close_err}", stacklevel=2)
