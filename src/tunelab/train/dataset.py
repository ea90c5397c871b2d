"""From dataset files to training and eval examples: read, mix by weight, tokenize, split."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig


@dataclasses.dataclass
class Examples:
    """Tokenized examples ready for packing, plus the counts shown at start."""

    train: list
    eval: list
    rows: int
    info: dict[str, Any]

    def tokens(self) -> int:
        """Training tokens per epoch."""
        from tunelab.train.packing import example_tokens

        return sum(example_tokens(ex) for ex in self.train)


def load_examples(cfg: TrainConfig, tokenizer, template) -> Examples:
    """Read cfg.datasets with the data layer, mix them, build examples and hold out an eval split."""
    from tunelab.data.formats import read_datasets
    from tunelab.data.tokenize import build_examples, tokenize_preference_rows

    if not cfg.datasets:
        raise TunelabError("datasets: no training data given; pass datasets=FILE.jsonl (or try `tunelab quickstart`)")
    if cfg.stage == "grpo":  # prompts plus reward-function columns, not conversations
        from tunelab.train.grpo_setup import load_prompt_examples

        return load_prompt_examples(cfg, tokenizer, template)
    weights = cfg.dataset_weights or [1.0] * len(cfg.datasets)
    rows: list = []
    for i, (path, weight) in enumerate(zip(cfg.datasets, weights)):
        loaded = read_datasets([path], format=cfg.data.format, skip_invalid=cfg.data.skip_invalid,
                               ignore_columns=cfg.data.ignore_columns)
        rows += mix_rows(first_rows(loaded.rows, cfg.data.max_samples), weight, seed=cfg.seed + i)
    check_row_kinds(rows, cfg.stage)
    if cfg.stage == "sft":
        examples, stats = build_examples(rows, template, tokenizer, cfg.data)
    else:
        examples, stats, _ = tokenize_preference_rows(rows, template, tokenizer, cfg.data, unpair=cfg.stage == "kto")
    if not examples:
        raise TunelabError(f"datasets: no usable examples in {', '.join(cfg.datasets)} (all rows empty or dropped)")
    check_images(rows, examples, cfg, tokenizer)
    train, held = split_eval(examples, cfg.eval_split, cfg.seed)
    return Examples(train, held, len(rows), {"token_stats": _as_dict(stats)})


def first_rows(rows: Sequence, limit: int) -> list:
    """The first `limit` rows of each source file (all when limit is 0), in order."""
    if not limit:
        return list(rows)
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        seen[row.source] = seen.get(row.source, 0) + 1
        if seen[row.source] <= limit:
            out.append(row)
    return out


def check_row_kinds(rows: Sequence, stage: str) -> None:
    """Every row fits the stage: pairs for dpo/orpo/simpo/rm, labelled rows or pairs for kto, no pairs for sft."""
    from tunelab.data.errors import DataError

    for row in rows:
        if stage == "sft" and row.kind == "pair":
            raise DataError("wrong stage", "a preference pair (chosen/rejected); train it with stage=dpo, orpo, "
                            "simpo or kto", row.source, row.line)
        if stage == "sft" and row.kind == "kto":
            raise DataError("wrong stage", "a KTO row (a desirable/undesirable label or kto_tag); train it with "
                            "stage=kto", row.source, row.line, "label")
        if stage == "kto" and row.kind == "sft":
            raise DataError("missing label", "stage=kto needs a boolean 'label' (desirable or not) or a "
                            "chosen/rejected pair", row.source, row.line, "label")
        if stage not in ("sft", "kto") and row.kind != "pair":
            raise DataError("not a pair", f"stage={stage} needs 'chosen' and 'rejected' replies",
                            row.source, row.line)


def check_images(rows: Sequence, examples: Sequence, cfg: TrainConfig, tokenizer) -> None:
    """Rows with images need a vision model, stage=sft and no packing."""
    from tunelab.data.errors import DataError

    row = next((r for r in rows if r.images), None)
    if row is None:
        return
    if cfg.stage != "sft" or cfg.packing:
        raise TunelabError(f"datasets: rows with images train with stage=sft and packing=false (got stage="
                           f"{cfg.stage}, packing={str(cfg.packing).lower()})")
    if not any(getattr(e, "images", None) for e in examples):
        raise DataError("images need a vision model", f"this row has images but model {cfg.model or 'default'} "
                        "is a text-only model (no <|image_pad|> token); use a vision-language model such as "
                        "Qwen2.5-VL, or drop the images", row.source, row.line, "images")


def mix_rows(rows: Sequence, weight: float, seed: int) -> list:
    """Rows repeated `int(weight)` times plus a seeded sample for the fraction (weight 0.5 = half)."""
    if weight < 0:
        raise TunelabError(f"dataset_weights: weights must be >= 0, got {weight}")
    whole, frac = int(weight), weight - int(weight)
    out = list(rows) * whole
    extra = round(frac * len(rows))
    out += random.Random(seed).sample(list(rows), extra) if extra else []
    return out


def split_eval(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded `fraction` of the examples (at least one when > 0) held out."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed ^ 0x5EED).shuffle(order)
    n_eval = max(1, int(len(examples) * fraction))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def _as_dict(stats: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    return dict(stats) if isinstance(stats, dict) else {"stats": str(stats)}
