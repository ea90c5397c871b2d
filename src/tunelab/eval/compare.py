"""Before/after evaluation of a run: held-out loss, side-by-side generations, forgetting.

One model object serves both sides for adapter runs: PEFT's `disable_adapter()`
gives the base model, so the two are compared on identical weights and inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from tunelab.eval.scores import score_all
from tunelab.export.runs import Run

GENERAL_TEXT = Path(__file__).resolve().parents[1] / "assets" / "general_text.txt"


@dataclasses.dataclass
class EvalOptions:
    """Knobs of `tunelab eval`."""

    data: Path | None = None  # held-out JSONL (any format tunelab train reads)
    prompts: Path | None = None  # prompts JSONL/TXT; default: held-out rows
    max_examples: int = 200
    num_generations: int = 8
    max_new_tokens: int = 64
    forgetting_threshold: float = 1.25  # warn when general-text perplexity grows by this factor


class Pair:
    """The base and tuned model behind one `side(name)` switch."""

    def __init__(self, run: Run):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = run.model_dir or run.adapter_dir or run.base_model
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        base = AutoModelForCausalLM.from_pretrained(run.base_model, dtype=torch.float32).eval()
        if run.model_dir is not None:
            self.base, self.tuned = base, AutoModelForCausalLM.from_pretrained(
                run.model_dir, dtype=torch.float32).eval()
        else:
            from peft import PeftModel

            self.tuned = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
            self.base = None  # the tuned model with its adapter disabled

    @contextmanager
    def side(self, name: str) -> Iterator[Any]:
        """Yield the model for 'base' or 'tuned'."""
        if name == "tuned" or self.base is not None:
            yield self.tuned if name == "tuned" else self.base
            return
        with self.tuned.disable_adapter():
            yield self.tuned


def held_out_loss(pair: Pair, examples: list[tuple[list[int], list[int]]], side: str) -> dict[str, float]:
    """Mean token cross-entropy over loss-bearing tokens, and its perplexity."""
    import torch

    total, count = 0.0, 0
    with pair.side(side) as model, torch.no_grad():
        for ids, labels in examples:
            logits = model(torch.tensor([ids])).logits[0, :-1]  # (T-1, V)
            target = torch.tensor(labels[1:])
            mask = target != -100
            if mask.any():
                total += torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum").item()
                count += int(mask.sum())
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def general_text_examples(tokenizer: Any, max_len: int = 256) -> list[tuple[list[int], list[int]]]:
    """The shipped general-text sample, one paragraph per example, loss on every token."""
    examples = []
    for para in GENERAL_TEXT.read_text(encoding="utf-8").split("\n"):
        if para.strip():
            ids = tokenizer(para, add_special_tokens=True)["input_ids"][:max_len]
            examples.append((ids, list(ids)))
    return examples


def generate(pair: Pair, prompt_ids: list[int], side: str, max_new_tokens: int, stop_ids: list[int]) -> str:
    """Greedy continuation of `prompt_ids`, cut at the first stop id."""
    import torch

    with pair.side(side) as model, torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stop_ids or None,
                             pad_token_id=pair.tokenizer.pad_token_id or 0)
    new = out[0, len(prompt_ids):].tolist()
    for i, tid in enumerate(new):
        if tid in stop_ids:
            new = new[:i]
            break
    return pair.tokenizer.decode(new, skip_special_tokens=True)


def side_by_side(pair: Pair, prompts: list[dict], encode: Callable[[list[dict]], list[int]],
                 stop_ids: list[int], max_new_tokens: int) -> list[dict]:
    """One row per prompt: base and tuned output with scores against the reference."""
    rows = []
    for item in prompts:
        ids = encode(item["messages"])
        row = {"prompt": item["messages"][-1]["content"], "reference": item.get("reference")}
        for side in ("base", "tuned"):
            row[side] = generate(pair, ids, side, max_new_tokens, stop_ids)
            if row["reference"] is not None:
                row[f"{side}_scores"] = score_all(row[side], row["reference"])
        rows.append(row)
    return rows


def mean_scores(rows: list[dict], side: str) -> dict[str, float]:
    """Average of each score over rows that have a reference."""
    scored = [r[f"{side}_scores"] for r in rows if f"{side}_scores" in r]
    if not scored:
        return {}
    return {k: sum(s[k] for s in scored) / len(scored) for k in scored[0]}


def forgetting_check(pair: Pair, threshold: float) -> dict[str, Any]:
    """General-text perplexity base vs tuned; `warning` is set when it rose past `threshold`."""
    examples = general_text_examples(pair.tokenizer)
    base, tuned = held_out_loss(pair, examples, "base"), held_out_loss(pair, examples, "tuned")
    ratio = tuned["perplexity"] / base["perplexity"]
    result = {"base": base, "tuned": tuned, "ratio": ratio, "threshold": threshold, "warning": None}
    if ratio > threshold:
        result["warning"] = (f"possible catastrophic forgetting: general-text perplexity rose "
                             f"{ratio:.2f}x ({base['perplexity']:.2f} -> {tuned['perplexity']:.2f}), "
                             f"above the {threshold:.2f}x threshold")
    return result


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    from tunelab.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))

