"""`tunelab eval`: run every before/after comparison and write RUN/eval.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tunelab.eval import benchmarks, compare, preference, rewards
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
    if options.tasks:
        run.require_generative("run on lm-eval tasks (--tasks)")
    manager = benchmarks.task_manager(options.tasks) if options.tasks else None  # bad names fail before loading
    template = run.chat_template()
    funcs = _reward_funcs(run)  # a GRPO run's own reward functions, imported before any model loads
    rows = _read_rows(options.data) if options.data and funcs is None else []  # GRPO prompts: eval/rewards.py
    result: dict[str, Any] = {"run": run.name, "base_model": str(run.base_model), "time": time.time(),
                              "template": template.name, "stage": run.stage}
    if run.is_reward_model:  # a score head: preference accuracy is all it has to show
        return _finish(run, result | {"preference": _preference(run, options, rows, template, None)}, log, show)
    with progress("loading the base and the tuned model"):
        pair = Pair(run)
    held = _held_out_examples(run, options, rows, template, pair.tokenizer)
    if held:
        result["held_out"] = {side: compare.held_out_loss(pair, held, side) for side in ("base", "tuned")}
        result["held_out"]["data"] = str(options.data or run.held_out_file)
    if run.stage in preference.STAGES:
        result["preference"] = _preference(run, options, rows, template, pair)
    prompts = _prompts(options, rows)[: options.num_generations]
    stop_ids = template.stop_token_ids(pair.tokenizer)
    prompt_ids = [encode_prompt(template, pair.tokenizer, item["messages"]) for item in prompts]
    engines = None
    if prompts or manager is not None or funcs is not None:
        with progress("loading the engine for the generations and benchmarks"):
            engines = compare.load_engines(run, options.dtype)  # an adapter run: one engine for both sides
    result["generations"] = compare.side_by_side(engines, prompts, prompt_ids, stop_ids,
                                                 options.max_new_tokens) if prompts else []
    if funcs is not None:
        result["reward"] = _reward(run, options, funcs, template, pair.tokenizer, engines, stop_ids)
        if result["reward"] and not prompts:  # the scored completions are the side-by-side rows
            result["generations"] = [{"prompt": r["prompt"], "reference": None, "base": r["base"],
                                      "tuned": r["tuned"]} for r in result["reward"]["rows"][: options.num_generations]]
    result["scores"] = {side: compare.mean_scores(result["generations"], side) for side in ("base", "tuned")}
    result["forgetting"] = compare.forgetting_check(pair, options.forgetting_threshold)
    if manager is not None:
        result["benchmarks"] = benchmarks.run_tasks(engines, options.tasks, manager, options.task_limit)
    return _finish(run, result, log, show)


def _finish(run, result: dict[str, Any], log: Callable[[str], None], show) -> dict[str, Any]:
    compare.write_json(run.eval_file, result)
    if show is not None and result.get("generations"):
        show(result["generations"])
    _print_summary(result, log)
    log(f"every answer and score: {run.eval_file}")
    return result


def _held_out_examples(run, options: EvalOptions, rows: list, template, tokenizer) -> list:
    """(ids, labels) to score for loss: `--data`'s rows, else an SFT run's own held-out split."""
    if rows:
        return _examples(rows[: options.max_examples], template, tokenizer)
    if run.stage != "sft":
        return []
    return [(ex.input_ids, ex.labels) for ex in run.held_out()[: options.max_examples]]


def _preference(run, options: EvalOptions, rows: list, template, pair: Pair | None) -> dict[str, Any] | None:
    """Held-out preference accuracy base vs tuned (eval/preference.py); None without pairs."""
    from transformers import AutoTokenizer

    tokenizer = pair.tokenizer if pair else AutoTokenizer.from_pretrained(run.model_dir or run.adapter_dir)
    pairs, source = preference.held_out_pairs(run, options.data, rows, tokenizer, template)
    if not pairs:
        return None
    return preference.evaluate(run, pairs[: options.max_examples], source, pair)


def _reward_funcs(run) -> list | None:
    """The loaded grpo.reward_funcs of a stage=grpo run (train/reward_funcs.py), else None."""
    if run.stage != "grpo":
        return None
    from tunelab.train.reward_funcs import load_reward_funcs

    return load_reward_funcs(run.train_config().grpo.reward_funcs)


def _reward(run, options: EvalOptions, funcs: list, template, tokenizer, engines, stop_ids) -> dict[str, Any] | None:
    """Held-out reward base vs tuned (eval/rewards.py); None without prompts."""
    examples, source = rewards.held_out_prompts(run, options.data, funcs, template, tokenizer)
    if not examples:
        return None
    return rewards.evaluate(run, engines, examples[: options.max_examples], source, funcs, stop_ids)


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
    if result.get("preference"):
        for line in preference.summary_lines(result["preference"]):
            log(line)
    elif result["stage"] in preference.STAGES:
        log(f"no held-out pairs to score preference accuracy on (stage={result['stage']}): pass --data PAIRS.jsonl")
    if result.get("reward"):
        for line in rewards.summary_lines(result["reward"]):
            log(line)
    elif result["stage"] == "grpo":
        log("no held-out prompts to score the reward on (stage=grpo): pass --data PROMPTS.jsonl")
    for side in ("base", "tuned"):
        if result.get("scores", {}).get(side):
            scores = "  ".join(f"{k} {v:.3f}" for k, v in result["scores"][side].items())
            log(f"{side:<6} scores  {scores}")
    forgetting = result.get("forgetting")
    if not forgetting:
        return
    log(f"general-text ppl base {forgetting['base']['perplexity']:.2f}  tuned "
        f"{forgetting['tuned']['perplexity']:.2f}  ({forgetting['ratio']:.2f}x)")
    if forgetting["warning"]:
        log("WARNING: " + forgetting["warning"])
    for task, metric, base, tuned in benchmarks.score_rows(result.get("benchmarks") or {}):
        log(f"{task} {metric}  base {base:.4f}  tuned {tuned:.4f}  ({tuned - base:+.4f})")
