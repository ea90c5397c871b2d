"""What `tunelab serve --models` can serve: every store model and finished run, by name.

The catalog is read fresh from the store index and the runs folders (through `rundir`), so a
model pulled or a run finished while the server runs is servable at once. A run's adapter is
served on top of its base model; adapters of one base share that base in memory.
"""

from __future__ import annotations

import dataclasses
import difflib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunelab.errors import RunError, TunelabError
from tunelab.rundir import Run, list_runs
from tunelab.store.index import Store, tunelab_home


@dataclasses.dataclass(frozen=True)
class Servable:
    """One servable name: a base model, or an adapter on top of one."""

    name: str
    base_name: str  # the name of the base model it runs on (itself for a base)
    base_path: Path  # the base model's directory: the key of what is loaded in memory
    adapter: Path | None = None  # the PEFT adapter dir, for a run's adapter
    size: int = 0  # bytes on disk of the weights
    family: str = ""
    params: int = 0
    modified: float = 0.0

    @property
    def key(self) -> str:
        """What is loaded once per base: its resolved directory."""
        return str(self.base_path.resolve())


def catalog(wanted: list[str], runs_dir: str | Path, store: Store | None = None) -> dict[str, Servable]:
    """Name -> Servable for store models and finished runs; `wanted` is ['all'] or the names to keep."""
    store = store or Store()
    items = {e.name: Servable(e.name, e.name, Path(e.path), None, e.size_bytes, e.architecture, e.params,
                              e.created) for e in store.entries().values() if e.present}
    by_path = {item.key: item for item in items.values()}
    for run in _runs(runs_dir):
        item = None if _reward_model(run) else _run_item(run, by_path)
        if item is not None and item.name not in items:
            items[item.name] = item
    if wanted == ["all"]:
        return items
    return {name: item for name, item in items.items() if name in wanted}


def check_wanted(wanted: list[str], runs_dir: str | Path) -> None:
    """At start: every name in `models` (other than 'all') must be servable."""
    if wanted == ["all"]:
        return
    known = catalog(["all"], runs_dir)
    for name in wanted:
        if name not in known:
            require_generative(name, runs_dir)
            raise TunelabError(f"models: no store model or finished run named '{name}'"
                               f"{did_you_mean(name, list(known))} See `tunelab list` and `tunelab runs`.")


def require_generative(name: str, runs_dir: str | Path) -> None:
    """RewardModelError when `name` is a reward-model run: the catalog leaves those out, and a
    request naming one is told why rather than 'not found'."""
    for run in _runs(runs_dir):
        if run.name == name:
            run.require_generative("served")


def _reward_model(run: Run) -> bool:
    """stage=rm runs score text and cannot generate; an unreadable config is left to _run_item."""
    try:
        return run.is_reward_model
    except TunelabError:
        return False


def did_you_mean(name: str, names: list[str]) -> str:
    """' Did you mean: a, b?' or '.'."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    return f". Did you mean: {', '.join(close)}?" if close else "."


def _runs(runs_dir: str | Path) -> list[Run]:
    """Runs under `runs_dir` and $TUNELAB_HOME/runs (each folder once)."""
    seen, out = set(), []
    for root in (Path(runs_dir), tunelab_home() / "runs"):
        for run in list_runs(root):
            if run.path.resolve() not in seen:
                seen.add(run.path.resolve())
                out.append(run)
    return out


def _run_item(run: Run, by_path: dict[str, Servable]) -> Servable | None:
    """A finished run: its full model, or its adapter on its (present) base; None otherwise."""
    try:
        if run.state != "finished":
            return None
        if run.model_dir is not None:
            return Servable(run.name, run.name, run.model_dir, None, _weights(run.model_dir),
                            modified=run.model_dir.stat().st_mtime)
        base, adapter = run.base_model, run.adapter_dir
    except RunError:
        return None
    if adapter is None or base is None or not (base / "config.json").is_file():
        return None
    known = by_path.get(str(base.resolve()))
    base_name = known.name if known else base.name
    return Servable(run.name, base_name, base, adapter, _weights(adapter),
                    known.family if known else "", known.params if known else 0, adapter.stat().st_mtime)


def _weights(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


# ---- listings -----------------------------------------------------------------------------------


def ollama_tag(item: Servable) -> dict[str, Any]:
    """One /api/tags entry, from the catalog alone (nothing is loaded)."""
    stamp = datetime.fromtimestamp(item.modified, timezone.utc).isoformat()
    parent = item.base_name if item.adapter else ""
    return {"name": item.name, "model": item.name, "modified_at": stamp, "size": item.size,
            "digest": f"{abs(hash(item.name)):016x}",
            "details": {"parent_model": parent, "format": "safetensors", "family": item.family,
                        "families": [item.family] if item.family else None,
                        "parameter_size": _count(item.params), "quantization_level": ""}}


def openai_model(item: Servable) -> dict[str, Any]:
    """One /v1/models entry; adapters carry `parent`."""
    return {"id": item.name, "object": "model", "created": int(item.modified), "owned_by": "tunelab",
            "root": str(item.adapter or item.base_path), "parent": item.base_name if item.adapter else None}


def _count(n: int) -> str:
    from tunelab.store.describe import human_count

    return human_count(n) if n else ""
