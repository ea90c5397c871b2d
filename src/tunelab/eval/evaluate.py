"""`tunelab eval`: run every before/after comparison and write RUN/eval.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tunelab.eval import benchmarks, compare
from tunelab.eval.compare import Pair
from tunelab.eval.config import EvalOptions
from tunelab.errors import RunError
from tunelab.rundir import load_finished


def run_eval(spec: str | Path, options: EvalOptions, log: Callable[[str], None] = print,
             show: Callable[[list[dict]], None] | None = None) -> dict[str, Any]:
    """Evaluate run `spec` (base vs tuned); returns the eval.json content, also written to the run.
    `show` gets the side-by-side generations before the summary lines go to `log`."""
    from tunelab.data.templates import encode_prompt

    from tunelab.progress import progress

    run = load_finished(spec)
    manager = benchmarks.task_manager(options.tasks) if options.tasks else None  # bad names fail before loading
    template = run.chat_template()
    with progress("loading the base and the tuned model"):
        pair = Pair(run)
    rows = _read_rows(options.data) if options.data else []
    result: dict[str, Any] = {"run": run.name, "base_model": str(run.base_model), "time": time.time(),
                              "template": template.name}
    if rows:
        examples = _examples(rows[: options.max_examples], template, pair.tokenizer)
        result["held_out"] = {side: compare.held_out_loss(pair, examples, side) for side in ("base", "tuned")}
        result["held_out"]["data"] = str(options.data)
    prompts = _prompts(options, rows)[: options.num_generations]
    stop_ids = template.stop_token_ids(pair.tokenizer)
    prompt_ids = [encode_prompt(template, pair.tokenizer, item["messages"]) for item in prompts]
    result["generations"] = compare.side_by_side(run, prompts, prompt_ids, stop_ids, options.max_new_tokens,
                                                 options.dtype)
    result["scores"] = {side: compare.mean_scores(result["generations"], side) for side in ("base", "tuned")}
    result["forgetting"] = compare.forgetting_check(pair, options.forgetting_threshold)
    if manager is not None:
        result["benchmarks"] = benchmarks.run_tasks(run, options.tasks, manager, options.dtype, options.task_limit)
    compare.write_json(run.eval_file, result)
    if show is not None:
        show(result["generations"])
    _print_summary(result, log)
    log(f"every answer and score: {run.eval_file}")
    return result


def _read_rows(path: Path) -> list:
    from tunelab.data.formats import read_datasets

    if not Path(path).exists():
        raise RunError(f"--data: file not found: {path}")
    return read_datasets([path]).rows


def _examples(rows: list, template, tokenizer) -> list[tuple[list[int], list[int]]]:
    from tunelab.data.config import DataConfig
    from tunelab.data.tokenize import tokenize_row

    cfg = DataConfig(cutoff_len=1024)
    examples = (tokenize_row(row, template, tokenizer, cfg) for row in rows)
    return [(ex.input_ids, ex.labels) for ex in examples if ex is not None]


def _prompts(options: EvalOptions, rows: list) -> list[dict]:
    """{'messages': prefix ending in a user turn, 'reference': str | None} items."""
    if options.prompts:
        path = Path(options.prompts)
        if not path.exists():
            raise RunError(f"--prompts: file not found: {path}")
        if path.suffix == ".txt":
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return [{"messages": [{"role": "user", "content": ln}], "reference": None} for ln in lines]
        rows = _read_rows(path)
    return [item for item in map(_split_reference, rows) if item is not None]


def _split_reference(row) -> dict | None:
    messages = row.messages
    if not messages:
        return None
    if messages[-1]["role"] == "assistant":
        return {"messages": messages[:-1], "reference": messages[-1]["content"]}
    return {"messages": messages, "reference": None}


def _print_summary(result: dict, log: Callable[[str], None]) -> None:
    held = result.get("held_out")
    if held:
        log(f"held-out loss   base {held['base']['loss']:.4f} (ppl {held['base']['perplexity']:.2f})"
            f"  tuned {held['tuned']['loss']:.4f} (ppl {held['tuned']['perplexity']:.2f})")
    for side in ("base", "tuned"):
        if result["scores"].get(side):
            scores = "  ".join(f"{k} {v:.3f}" for k, v in result["scores"][side].items())
            log(f"{side:<6} scores  {scores}")
    forgetting = result["forgetting"]
    log(f"general-text ppl base {forgetting['base']['perplexity']:.2f}  tuned "
        f"{forgetting['tuned']['perplexity']:.2f}  ({forgetting['ratio']:.2f}x)")
    if forgetting["warning"]:
        log("WARNING: " + forgetting["warning"])
    for task, metric, base, tuned in benchmarks.score_rows(result.get("benchmarks") or {}):
        log(f"{task} {metric}  base {base:.4f}  tuned {tuned:.4f}  ({tuned - base:+.4f})")
