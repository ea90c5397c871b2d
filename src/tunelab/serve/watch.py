"""`--watch runs/`: serve each training run's adapter as soon as the run says it has finished.

Polls the folder (no inotify dependency; a run finishes rarely). A run is loaded once
per adapter version: a re-finished run with a newer adapter file is reloaded.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.rundir import list_runs

if TYPE_CHECKING:
    from tunelab.serve.service import Service

log = logging.getLogger("tunelab.serve.watch")
_CRASHED = -1.0  # the `seen` stamp of a run already reported as crashed


def finished_adapters(runs_dir: Path) -> dict[str, tuple[Path, float]]:
    """Run name -> (adapter dir, adapter mtime) for every finished run with a PEFT adapter."""
    found = {}
    for run in list_runs(runs_dir):
        adapter = run.adapter_dir
        if adapter is not None and run.state == "finished":  # a corrupt status reads as 'corrupt'
            found[run.name] = (adapter, max(f.stat().st_mtime for f in adapter.iterdir()))
    return found


def crashed_runs(runs_dir: Path) -> list[str]:
    """Names of runs whose trainer died without finishing (nothing of theirs will be served)."""
    return [run.name for run in list_runs(runs_dir) if run.state == "crashed"]


def sync_once(service: "Service", runs_dir: Path, seen: dict[str, float]) -> list[str]:
    """Load new or updated adapters; return the names loaded this time."""
    loaded = []
    base = service.backend.model_id
    for name in crashed_runs(runs_dir):
        if seen.get(name) != _CRASHED:
            seen[name] = _CRASHED  # say it once; a resumed run that finishes is served as usual
            log.warning("watch: run '%s' crashed (its trainer is gone); resume it with `tunelab train "
                        "--resume %s`", name, runs_dir / name)
    for name, (path, stamp) in finished_adapters(runs_dir).items():
        if seen.get(name) == stamp or name == base:
            continue
        seen[name] = stamp
        try:
            service.backend.add_adapter(name, str(path))
        except Exception as err:  # noqa: BLE001 - one bad run must not stop the watcher
            log.warning("watch: cannot serve %s: %s", path, err)
            continue
        loaded.append(name)
        log.info("watch: serving adapter '%s' from %s", name, path)
    return loaded


async def watch_runs(service: "Service", runs_dir: str | Path, interval_s: float) -> None:
    """Scan `runs_dir` every `interval_s` seconds until cancelled."""
    runs, seen = Path(runs_dir), {}
    while True:
        if runs.is_dir():
            await asyncio.to_thread(sync_once, service, runs, seen)
        await asyncio.sleep(interval_s)
