"""Run directories as the web UI shows them: safe names, summaries, detail, ETA.

The UI reads runs only through `tunelab.rundir.Run`, so a run started from the terminal
shows up the same as one started from the browser.
"""

from __future__ import annotations

import io
import re
import shlex
import time
import zipfile
from pathlib import Path

from tunelab import rundir
from tunelab.errors import TunelabError
from tunelab.rundir import Run

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunNotFound(TunelabError):
    """No run directory by that name."""


def check_run_name(name: str) -> str:
    """A run name is one path component of letters, digits, '.', '_' or '-'."""
    if not _NAME.match(name or ""):
        raise TunelabError(f"run name '{name}': use letters, digits, '.', '_' or '-' (max 128)")
    return name


def run_dir(runs_dir: Path, name: str) -> Path:
    """runs_dir/NAME, which must exist."""
    path = Path(runs_dir) / check_run_name(name)
    if not path.is_dir():
        raise RunNotFound(f"no run named '{name}' in {runs_dir}")
    return path


def list_runs(runs_dir: Path) -> list[dict]:
    """One summary per run directory, newest first."""
    return [run_summary(run) for run in rundir.list_runs(runs_dir) if _NAME.match(run.name)]


def run_summary(run: Run) -> dict:
    """Name, state and progress of one run (an unreadable status reads as state 'corrupt')."""
    try:
        status = run.status()
    except TunelabError:
        status = {}
    return {
        "name": run.name, "state": run.state, "step": status.get("step", 0),
        "total_steps": status.get("total_steps", 0), "final_loss": status.get("final_loss"),
        "method": status.get("method", ""), "model": status.get("base_model_spec") or status.get("base_model", ""),
        "started": status.get("started"), "updated": status.get("updated") or run.path.stat().st_mtime,
        "pid": status.get("pid"),
    }


def run_detail(path: Path) -> dict:
    """Everything the run page shows except metrics and log: status, ETA, summary, config."""
    run = Run(path)
    detail = run_summary(run)
    detail["path"] = str(path.resolve())
    detail["status"] = _status_or_empty(run)
    detail["summary"] = run.summary()
    detail["config_yaml"] = run.config_text()
    detail["eta_s"] = eta_seconds(detail)
    detail["has_report"] = run.report_file.is_file()
    detail["has_adapter"] = run.adapter_dir is not None
    detail["is_reward_model"] = _reward_model(run)
    detail |= tensorboard(run)
    return detail


def tensorboard(run: Run) -> dict:
    """Where the run's TensorBoard event files are, the command that shows them on this machine, and
    the API path that downloads them as a zip (for a browser on another machine); None without."""
    logs = run.tensorboard_logs()
    if logs is None:
        return {"tensorboard_dir": None, "tensorboard_command": None, "tensorboard_download": None}
    path = str(logs.resolve())
    return {"tensorboard_dir": path, "tensorboard_command": f"tensorboard --logdir {shlex.quote(path)}",
            "tensorboard_download": f"/ui/api/runs/{run.name}/tensorboard/download"}


def tensorboard_zip(run: Run) -> bytes:
    """The run's TensorBoard logs as a zip of RUN_NAME/<event files>: unzipped, `tensorboard --logdir .`
    lists the run under its own name. RunNotFound when it has written none."""
    logs = run.tensorboard_logs()
    if logs is None:
        raise RunNotFound(f"run '{run.name}' has no TensorBoard logs (train it with report_to: tensorboard)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in logs.rglob("*") if p.is_file()):
            zf.write(file, f"{run.name}/{file.relative_to(logs).as_posix()}")
    return buf.getvalue()


def _reward_model(run: Run) -> bool:
    """stage=rm (a score head: merged, never served); False when config.yaml cannot be read."""
    try:
        return run.is_reward_model
    except TunelabError:
        return False


def _status_or_empty(run: Run) -> dict:
    try:
        return run.status()
    except TunelabError:
        return {}


def eta_seconds(run: dict) -> float | None:
    """Time left at the average pace so far; None until a step has finished."""
    step, total, started = run.get("step") or 0, run.get("total_steps") or 0, run.get("started")
    if run.get("state") != "running" or not step or not total or not started:
        return None
    elapsed = max(0.0, (run.get("updated") or time.time()) - float(started))
    return max(0.0, elapsed / step * (total - step))
