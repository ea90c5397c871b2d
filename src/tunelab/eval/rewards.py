"""Held-out reward of a GRPO run, base vs tuned.

Each held-out prompt (the run's RUN/heldout.jsonl, or the GRPO prompt rows of `--data`) is answered
once per side, greedily (temperature 0, up to the run's grpo.sampling.max_tokens, stopping at the
template's end of turn and at the run's grpo.sampling.stop strings, which stay in the scored text as
in training: train/rollout.scored_text), by one tunelab engine holding the base and the adapter (compare.load_engines;
both sides in one batch). The run's own reward functions (grpo.reward_funcs, train/reward_funcs.py)
score the completions; reported per side are each function's mean over the completions it could
score (training's rewards/NAME/mean) and the mean weighted total (training's `reward`,
train/grpo_loss.weighted_rewards). Greedy, so one completion per prompt and the same numbers every run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from tunelab.errors import RunError
from tunelab.rundir import Run

SIDES = ("base", "tuned")


def held_out_prompts(run: Run, data: Path | None, funcs: Sequence, template: Any, tokenizer: Any
                     ) -> tuple[list, str]:
    """(PromptExamples, where they came from): the GRPO prompt rows of `data` when given, read and
    checked against the reward functions' columns as training reads them, else the run's held-out split."""
    from tunelab.data.prompts import PromptExample, read_prompts, tokenize_prompts
    from tunelab.train.reward_funcs import reward_inputs

    if data is None:
        return [e for e in run.held_out() if isinstance(e, PromptExample)], "the run's held-out split"
    if not Path(data).exists():
        raise RunError(f"--data: file not found: {data}")
    cfg = run.train_config()
    loaded = read_prompts([data], reward_inputs(funcs), {f.name: f.required for f in funcs}, cfg.data.ignore_columns)
    examples, _ = tokenize_prompts(loaded.rows, template, tokenizer, cfg.data.cutoff_len, cfg.grpo.sampling.max_tokens)
    return examples, str(data)


def evaluate(run: Run, engines: dict, examples: list, source: str, funcs: Sequence, stop_ids: list[int]
             ) -> dict[str, Any]:
    """{"prompts", "data", "decoding", "weights", "base": {"reward", "rewards": {label: mean}}, "tuned": ...,
    "rows": [{"prompt", "base", "tuned", "base_reward", "tuned_reward"}]}."""
    import torch

    from tunelab.engine import SamplingParams
    from tunelab.eval.compare import generate_sides
    from tunelab.train.grpo_loss import weighted_rewards
    from tunelab.train.reward_funcs import score_completions
    from tunelab.train.rollout import scored_text

    grpo = run.train_config().grpo
    params = SamplingParams(max_tokens=grpo.sampling.max_tokens, temperature=0, stop_token_ids=stop_ids,
                            stop=grpo.sampling.stop)
    outputs = generate_sides(engines, [ex.prompt_ids for ex in examples], params)
    texts = {side: [scored_text(o.outputs[0].text, o.outputs[0].stop_reason) for o in outputs[side]]
             for side in SIDES}
    weights = torch.tensor(grpo.weights(), dtype=torch.float32)
    out: dict[str, Any] = {"prompts": len(examples), "data": source,
                           "decoding": f"greedy, up to {grpo.sampling.max_tokens} new tokens"
                                       + (f", stop {grpo.sampling.stop}" if grpo.sampling.stop else ""),
                           "weights": {f.label: w for f, w in zip(funcs, grpo.weights())}}
    totals = {}
    for side in SIDES:
        done = [o.outputs[0] for o in outputs[side]]
        per_func = torch.tensor(score_completions(funcs, examples, texts[side],
                                                  [list(c.token_ids) for c in done]), dtype=torch.float32).t()
        totals[side] = weighted_rewards(per_func, weights).tolist()  # (N,)
        out[side] = {"reward": _mean(totals[side]),
                     "rewards": {f.label: _mean(per_func[:, k].tolist()) for k, f in enumerate(funcs)}}
    out["rows"] = [{"prompt": ex.messages[-1]["content"], "base": texts["base"][i],
                    "tuned": texts["tuned"][i], "base_reward": totals["base"][i],
                    "tuned_reward": totals["tuned"][i]} for i, ex in enumerate(examples)]
    return out


def _mean(values: list[float]) -> float:
    """Mean over the scorable (non-NaN) values; NaN when there are none."""
    seen = [v for v in values if not math.isnan(v)]
    return sum(seen) / len(seen) if seen else math.nan


def summary_lines(reward: dict[str, Any]) -> list[str]:
    """The terminal lines for `tunelab eval`."""
    base, tuned = reward["base"], reward["tuned"]
    lines = [f"held-out reward ({reward['prompts']} prompts from {reward['data']}; {reward['decoding']})  "
             f"base {base['reward']:.4f}  tuned {tuned['reward']:.4f}  ({tuned['reward'] - base['reward']:+.4f})"]
    for label, weight in reward["weights"].items():
        b, t = base["rewards"][label], tuned["rewards"][label]
        lines.append(f"  reward {label} (weight {weight:g})  base {b:.4f}  tuned {t:.4f}  ({t - b:+.4f})")
    return lines
