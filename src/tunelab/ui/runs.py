"""Reading run directories for the web UI: status, metrics since a line, log tail, ETA.

The trainer writes `runs/NAME/{status.json, metrics.jsonl, train.log, summary.json}`
(docs/architecture.md); the UI only reads them, so a run started from the terminal
shows up the same as one started from the browser.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tunelab.atomic import read_json_object
from tunelab.errors import TunelabError

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
    """One summary per run directory (the trainer's own listing), newest first."""
    from tunelab.train.rundir import list_runs as trainer_runs

    return [run_summary(path, status) for path, status in trainer_runs(runs_dir) if _NAME.match(path.name)]


def run_summary(path: Path, status: dict | None = None) -> dict:
    """Name, state and progress of one run, from its status.json."""
    status = read_json_object(path / "status.json") if status is None else status
    state = status.get("state") or ("finished" if (path / "summary.json").exists() else "unknown")
    return {
        "name": path.name, "state": state, "step": status.get("step", 0),
        "total_steps": status.get("total_steps", 0), "final_loss": status.get("final_loss"),
        "method": status.get("method", ""), "model": status.get("base_model_spec") or status.get("base_model", ""),
        "started": status.get("started"), "updated": status.get("updated") or path.stat().st_mtime,
        "pid": status.get("pid"),
    }


def run_detail(path: Path) -> dict:
    """Everything the run page shows except metrics and log: status, ETA, summary, config."""
    detail = run_summary(path)
    detail["path"] = str(path.resolve())
    detail["status"] = read_json_object(path / "status.json")
    detail["summary"] = read_json_object(path / "summary.json")
    config = path / "config.yaml"
    detail["config_yaml"] = config.read_text(encoding="utf-8") if config.exists() else ""
    detail["eta_s"] = eta_seconds(detail)
    detail["has_report"] = report_path(path) is not None
    detail["has_adapter"] = (path / "adapter").is_dir()
    return detail


def eta_seconds(run: dict) -> float | None:
    """Time left at the average pace so far; None until a step has finished."""
    step, total, started = run.get("step") or 0, run.get("total_steps") or 0, run.get("started")
    if run.get("state") != "running" or not step or not total or not started:
        return None
    elapsed = max(0.0, (run.get("updated") or time.time()) - float(started))
    return max(0.0, elapsed / step * (total - step))


def read_metrics(path: Path, since: int = 0) -> tuple[list[dict], int]:
    """metrics.jsonl rows from line `since` on, and the line count to ask from next time."""
    file = path / "metrics.jsonl"
    if not file.exists():
        return [], since
    lines = file.read_text(encoding="utf-8").split("\n")
    complete = lines[:-1]  # the last piece may be a line the trainer is still writing
    rows = []
    for line in complete[since:]:
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append({})  # keep the count aligned with lines; the chart skips it
    return [r for r in rows if r], len(complete)


def log_tail(path: Path, lines: int = 200) -> list[str]:
    """The last `lines` lines of train.log (reads at most the last 256 KB)."""
    file = path / "train.log"
    if not file.exists():
        return []
    with open(file, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()][-lines:]


def report_path(path: Path) -> Path | None:
    """The run's HTML report (written by `tunelab report`), if there is one."""
    for name in ("report.html", "report/index.html"):
        if (path / name).is_file():
            return path / name
    return None
