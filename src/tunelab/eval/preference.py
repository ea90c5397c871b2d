"""Held-out preference accuracy of a preference run (dpo, kto, orpo, simpo, rm), base vs tuned.

A held-out pair is won when its chosen reply gets the higher reward (a tie is no win, as in
training's `accuracy` metric, so the tuned side equals the last `eval_accuracy` of the run):

    dpo, kto     beta (log p(y|x) - log p_ref(y|x)), the reference being the base model; the base
                 itself scores 0 on every reply, so its accuracy is 0 by definition
    orpo, simpo  beta x the mean log-prob per reply token (the reward of their losses)
    rm           the score head; the base is the starting head training drew (same seed)

For stages with an LM head, `logp_accuracy` and `logp_margin` add the model's own preference (the
chosen reply has the higher mean log-prob per token, and by how much), which mean the same for the
base and the tuned model: an instruction-tuned base may already rank every pair right, and then
the widening margin is what training shows.
The pairs are the run's own held-out split (RUN/heldout.jsonl, KTO replies regrouped by prompt)
or the pairs of `--data`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from tunelab.rundir import Run

STAGES = ("dpo", "kto", "orpo", "simpo", "rm")
REWARDS = {"dpo": "beta x (log p - log p_ref), reference = the base model",
           "kto": "beta x (log p - log p_ref), reference = the base model",
           "orpo": "beta x mean log-prob per reply token", "simpo": "beta x mean log-prob per reply token",
           "rm": "the reward head's score"}
BATCH = 8


def held_out_pairs(run: Run, data: Path | None, rows: list, tokenizer: Any, template: Any) -> tuple[list, str]:
    """(pairs as PreferenceExamples, where they came from): the pair rows of `data` when given,
    else the run's held-out split."""
    from tunelab.data.tokenize import tokenize_preference_rows

    if data is not None:
        pair_rows = [r for r in rows if r.kind == "pair"]
        return tokenize_preference_rows(pair_rows, template, tokenizer, run.train_config().data)[0], str(data)
    return regroup_kto([e for e in run.held_out() if hasattr(e, "completions")]), "the run's held-out split"


def regroup_kto(examples: Sequence) -> list:
    """Pairs as they are; KTO replies joined into (desirable, undesirable) pairs of one prompt."""
    from tunelab.data.tokenize import PreferenceExample

    pairs, good, bad = [], {}, {}
    for ex in examples:
        if len(ex.completions) == 2:
            pairs.append(ex)
        else:
            (good if ex.label else bad).setdefault(tuple(ex.prompt_ids), []).append(ex.completions[0])
    for prompt, chosen in good.items():
        pairs += [PreferenceExample(list(prompt), [c, r]) for c, r in zip(chosen, bad.get(prompt, []))]
    return pairs


def evaluate(run: Run, pairs: list, source: str, pair_models: Any | None = None) -> dict[str, Any]:
    """{"stage", "pairs", "data", "reward", "base": {accuracy, margin[, logp_accuracy]}, "tuned": {...}}.
    `pair_models`: eval.compare.Pair for LM stages (None for rm, which loads its own)."""
    cfg = run.train_config()
    out: dict[str, Any] = {"stage": cfg.stage, "pairs": len(pairs), "data": source, "reward": REWARDS[cfg.stage]}
    if cfg.stage == "rm":
        scores = _reward_model_scores(run, pairs, cfg.seed)
        return out | {side: _accuracy(*scores[side]) for side in ("base", "tuned")}
    logps = {side: _side_logps(pair_models, side, pairs) for side in ("base", "tuned")}
    beta = cfg.pref.beta_for(cfg.stage)
    for side in ("base", "tuned"):
        out[side] = _accuracy(*_rewards(cfg.stage, beta, logps[side], logps["base"]))
        own = _accuracy(*_per_token(logps[side]))
        out[side] |= {"logp_accuracy": own["accuracy"], "logp_margin": own["margin"]}
    return out


def _rewards(stage: str, beta: float, side: tuple, base: tuple) -> tuple[list[float], list[float]]:
    """(chosen rewards, rejected rewards) of one side by the stage's definition."""
    if stage in ("dpo", "kto"):
        (pc, pr, _, _), (bc, br, _, _) = side, base
        return [beta * (a - b) for a, b in zip(pc, bc)], [beta * (a - b) for a, b in zip(pr, br)]
    chosen, rejected = _per_token(side)
    return [beta * c for c in chosen], [beta * r for r in rejected]


def _per_token(side: tuple) -> tuple[list[float], list[float]]:
    pc, pr, lc, lr = side
    return [p / max(n, 1) for p, n in zip(pc, lc)], [p / max(n, 1) for p, n in zip(pr, lr)]


def _accuracy(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    n = max(len(chosen), 1)
    return {"accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
            "margin": sum(c - r for c, r in zip(chosen, rejected)) / n}


def _batches(pairs: list) -> Iterator[dict]:
    from tunelab.train.pairs import collate_preference

    for start in range(0, len(pairs), BATCH):
        yield collate_preference(range(start, min(start + BATCH, len(pairs))), pairs, pad_id=0)


def _side_logps(pair_models: Any, side: str, pairs: list) -> tuple[list, list, list, list]:
    """(chosen log-prob sums, rejected sums, chosen lengths, rejected lengths) under one side."""
    import torch

    from tunelab.train.loss import causal_lm
    from tunelab.train.pairs import sequence_logps

    out: tuple[list, list, list, list] = ([], [], [], [])
    with pair_models.side(side) as model, torch.no_grad():
        for batch in _batches(pairs):
            logps, lens = sequence_logps(causal_lm(model), batch["input_ids"], batch["labels"], batch["position_ids"])
            for acc, part in zip(out, (*logps.chunk(2), *lens.chunk(2))):
                acc.extend(part.tolist())
    return out


def _reward_model_scores(run: Run, pairs: list, seed: int) -> dict[str, tuple[list, list]]:
    """{side: (chosen scores, rejected scores)} from the score head."""
    import torch

    from tunelab.train.reward import reward_scores

    out = {}
    for side in ("base", "tuned"):
        with _reward_model(run, side, seed) as model, torch.no_grad():
            chosen, rejected = [], []
            for batch in _batches(pairs):
                c, r = reward_scores(model, batch["input_ids"], batch["labels"], batch["position_ids"]).chunk(2)
                chosen, rejected = chosen + c.tolist(), rejected + r.tolist()
        out[side] = (chosen, rejected)
    return out


@contextmanager
def _reward_model(run: Run, side: str, seed: int) -> Iterator[Any]:
    """The base with the head training started from (training seeds torch right before loading it),
    or the trained reward model (a full model, or the base + the SEQ_CLS adapter and its head)."""
    import torch

    from tunelab.train.reward import load_reward_model, load_run_reward_model

    torch.manual_seed(seed)
    if side == "tuned":
        yield load_run_reward_model(run, torch.float32).eval()
        return
    yield load_reward_model(run.base_model, dtype=torch.float32).eval()


def summary_lines(pref: dict[str, Any]) -> list[str]:
    """The terminal lines for `tunelab eval`."""
    base, tuned = pref["base"], pref["tuned"]
    lines = [f"preference accuracy ({pref['pairs']} pairs from {pref['data']}; reward: {pref['reward']})  "
             f"base {base['accuracy']:.3f}  tuned {tuned['accuracy']:.3f}  "
             f"(margin {base['margin']:+.3f} -> {tuned['margin']:+.3f})"]
    if "logp_accuracy" in base:
        lines.append(f"preference by mean log-prob per token  base {base['logp_accuracy']:.3f}  "
                     f"tuned {tuned['logp_accuracy']:.3f}  (margin {base['logp_margin']:+.3f} -> "
                     f"{tuned['logp_margin']:+.3f})")
    return lines
