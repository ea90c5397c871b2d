"""Standard benchmarks for `tunelab eval --tasks`: lm-eval tasks on the base and the tuned model.

Both sides run through `TunelabLM` (eval/harness.py) on the engines `tunelab eval` loaded for
its generations (`compare.load_engines`): one when the run is an adapter (named per request), two
for a full fine-tune. A task is any lm-eval task,
group or tag name, or the path of a task YAML (a local task over local data; nothing is fetched
for it). Scores are lm-eval's metrics by task, without their stderr and the ",none" filter tag.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError, MissingExtra

SIDES = ("base", "tuned")


def require_lm_eval() -> None:
    """MissingExtra (install tunelab[lmeval]) unless lm-evaluation-harness is importable."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise MissingExtra("lm_eval", "lmeval", "tunelab eval --tasks") from None


def task_manager(specs: list[str]):
    """An lm-eval TaskManager that knows every spec; an unknown name is a ConfigError naming it.
    Only paths given: lm-eval's own task index (thousands of YAML files) is not read."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    names = [s for s in specs if not _is_path(s)]
    for path in (Path(s) for s in specs if _is_path(s)):
        if not path.is_file():
            raise ConfigError(f"tasks: task file not found: {path}")
    manager = TaskManager(include_defaults=bool(names))
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " (see `lm_eval ls tasks`)"
            raise ConfigError(f"tasks: unknown lm-eval task '{name}'{hint}")
    return manager


def _is_path(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or "/" in spec


def run_tasks(engines: dict[str, tuple[Any, str | None]], specs: list[str], manager: Any,
              limit: int | None = None) -> dict[str, Any]:
    """{"tasks": specs, "base": {task: {metric: value}}, "tuned": {...}} for the run's two sides
    (`engines`: `compare.load_engines(run)`; `manager`: `task_manager(specs)`)."""
    from tunelab.eval.harness import TunelabLM
    from tunelab.progress import progress

    result: dict[str, Any] = {"tasks": list(specs), "limit": limit}
    for side in SIDES:
        llm, adapter = engines[side]
        with progress(f"lm-eval benchmarks ({', '.join(specs)}), {side} model"):
            result[side] = evaluate(TunelabLM(llm, adapter=adapter), specs, manager, limit)
    return result


def evaluate(lm: Any, specs: list[str], manager: Any, limit: int | None = None) -> dict[str, dict[str, float]]:
    """lm-eval's scores of `lm` on `specs`: {task: {metric: value}}."""
    import lm_eval

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notes drown our output
    out = lm_eval.simple_evaluate(model=lm, tasks=list(specs), task_manager=manager, limit=limit,
                                  bootstrap_iters=0, log_samples=False, verbosity="WARNING")
    return {task: scores(metrics) for task, metrics in out["results"].items()}


def scores(metrics: dict[str, Any]) -> dict[str, float]:
    """lm-eval's metric dict of one task -> {metric: value} (stderr and the 'none' filter tag dropped)."""
    out = {}
    for key, value in metrics.items():
        name, _, filt = key.partition(",")
        if isinstance(value, (int, float)) and "_stderr" not in name and filt:
            out[name if filt == "none" else f"{name} ({filt})"] = float(value)
    return out


def score_rows(bench: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(task, metric, base, tuned) for every score of both sides, in task order."""
    rows = []
    for task, metrics in bench.get("base", {}).items():
        tuned = bench.get("tuned", {}).get(task, {})
        rows.extend((task, m, v, tuned.get(m, float("nan"))) for m, v in metrics.items())
    return rows
