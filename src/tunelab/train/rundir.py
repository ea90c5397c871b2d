"""The run directory that `tunelab train` writes and serve/export/eval/ui read.

    runs/NAME/
      status.json  config.yaml  metrics.jsonl  train.log  summary.json
      adapter/ (PEFT) or model/ (full, freeze)   checkpoints/step-N/

Every JSON/YAML file is written to a temp file and renamed, so readers never see half a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunelab.atomic import write_text_atomic as write_atomic
from tunelab.errors import TunelabError

STATES = ("running", "finished", "failed", "stopped")


class RunDir:
    """One run's folder: status, config, metrics, log and summary."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def status(self) -> dict[str, Any]:
        """The current status.json (empty when missing)."""
        return _read_json(self.path / "status.json")

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json and stamp `updated`."""
        status = self.status() | fields | {"updated": time.time()}
        write_atomic(self.path / "status.json", json.dumps(status, indent=2))
        return status

    def write_config(self, config: dict[str, Any]) -> None:
        """The resolved config as YAML."""
        import yaml

        write_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The saved config.yaml of this run."""
        from tunelab.config import read_yaml

        return read_yaml(self.path / "config.yaml")

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One line of metrics.jsonl (appends are line-sized, so readers see whole lines)."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """All metrics rows written so far."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def log(self, line: str) -> None:
        """Append a timestamped line to train.log."""
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json: the final numbers of the run."""
        write_atomic(self.path / "summary.json", json.dumps(summary, indent=2))


def default_run_name(model: str | None, method: str) -> str:
    """runs/<model>-<method>-<YYYYmmdd-HHMMSS>."""
    base = Path(str(model)).name if model else "gemma3-270m"
    return f"{base}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def list_runs(root: str | Path = "runs") -> list[tuple[Path, dict[str, Any]]]:
    """(run dir, status) for every run under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [(p, _read_json(p / "status.json")) for p in root.iterdir() if (p / "status.json").exists()]
    return sorted(runs, key=lambda r: r[1].get("started", 0), reverse=True)


def open_run(path: str | Path) -> RunDir:
    """An existing run directory, or a clear error."""
    run = RunDir(path)
    if not (run.path / "config.yaml").exists():
        raise TunelabError(f"{run.path}: not a tunelab run directory (no config.yaml)")
    return run


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
