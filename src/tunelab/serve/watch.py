"""`--watch runs/`: serve each training run's adapter as soon as its status.json says finished.

Polls the folder (no inotify dependency; a run finishes rarely). A run is loaded once
per adapter version: a re-finished run with a newer adapter file is reloaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunelab.serve.service import Service

log = logging.getLogger("tunelab.serve.watch")


def finished_adapters(runs_dir: Path) -> dict[str, tuple[Path, float]]:
    """Run name -> (adapter dir, adapter mtime) for every finished run with a PEFT adapter."""
    found = {}
    for status_file in sorted(runs_dir.glob("*/status.json")):
        run = status_file.parent
        adapter = run / "adapter"
        weights = adapter / "adapter_config.json"
        try:
            state = json.loads(status_file.read_text(encoding="utf-8")).get("state")
        except (OSError, ValueError):
            continue  # being written right now: look again next scan
        if state == "finished" and weights.is_file():
            stamp = max(f.stat().st_mtime for f in adapter.iterdir())
            found[run.name] = (adapter, stamp)
    return found


def sync_once(service: "Service", runs_dir: Path, seen: dict[str, float]) -> list[str]:
    """Load new or updated adapters; return the names loaded this time."""
    loaded = []
    base = service.backend.model_id
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
