"""`tunelab data check`: read everything, tokenize it like training would, report what matters.

The report lists rows per format, rejected rows per reason (with the first line
numbers), empty replies, duplicates, token-length percentiles, rows over the cutoff
and the share of tokens that carry loss. Every row lands in exactly one count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data.builtin_templates import BUILTINS
from tunelab.data.config import DataConfig
from tunelab.data.formats import read_datasets
from tunelab.data.rows import LoadedData, Row
from tunelab.data.templates import ChatTemplate
from tunelab.data.tokenize import TokenStats, tokenize_preference_rows, tokenize_rows

FIRST = 5  # line numbers shown per finding


@dataclass
class CheckReport:
    """Findings about a dataset, ready to print with `format_report`."""

    loaded: LoadedData
    stats: TokenStats
    cfg: DataConfig
    template: str
    lengths: list[int]  # each valid row's tokens before the cutoff
    empty_replies: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    pairs: PairReport | None = None  # when some rows are preference pairs or KTO rows
    image_tokens: list[int] = field(default_factory=list)  # each image's <|image_pad|> tokens (Qwen2-VL resizing)

    @property
    def loss_tokens(self) -> int:
        """Tokens that carry loss, SFT and preference rows together."""
        return self.stats.loss_tokens + (self.pairs.stats.loss_tokens if self.pairs else 0)

    @property
    def invalid(self) -> int:
        return self.loaded.rejected_count

    def percentiles(self) -> dict[str, int]:
        """p50/p90/p99/max of row lengths in tokens (before the cutoff)."""
        lengths = sorted(self.lengths)
        if not lengths:
            return {}
        at = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
        return {name: lengths[round(q * (len(lengths) - 1))] for name, q in at.items()}


@dataclass
class PairReport:
    """Findings about preference rows: pairs and KTO rows per format, identical sides, lengths."""

    pairs: dict[str, int]
    kto: dict[str, int]
    identical: list[tuple[str, int]]
    empty_sides: list[tuple[str, int]]
    stats: TokenStats
    chosen_lengths: list[int]  # prompt + chosen tokens of each kept pair
    rejected_lengths: list[int]


def check_pairs(loaded: LoadedData, template: ChatTemplate, tokenizer: Any, cfg: DataConfig) -> PairReport | None:
    """Tokenize the preference rows as preference training would; None when there are none."""
    rows = [r for r in loaded.rows if r.kind != "sft"]
    if not rows and "empty side" not in loaded.rejected:
        return None
    examples, stats, _ = tokenize_preference_rows(rows, template, tokenizer, cfg)
    pairs = [e for e in examples if len(e.completions) == 2]
    count = lambda kind: {f: sum(1 for r in rows if r.kind == kind and r.format == f)  # noqa: E731
                          for f in sorted({r.format for r in rows if r.kind == kind})}
    identical = [(r.source, r.line) for r in rows if r.rejected and r.rejected[-1] == (r.messages or [])[-1]]
    return PairReport(count("pair"), count("kto"), identical, loaded.rejected.get("empty side", []), stats,
                      [len(e.prompt_ids) + len(e.completions[0]) for e in pairs],
                      [len(e.prompt_ids) + len(e.completions[1]) for e in pairs])


def check_data(paths: list[str | Path], template: ChatTemplate, tokenizer: Any, cfg: DataConfig) -> CheckReport:
    """Read `paths` (counting invalid rows instead of stopping) and tokenize every valid row."""
    from tunelab.progress import progress, track

    with progress("reading the data files"):
        loaded = read_datasets(paths, cfg.format, skip_invalid=True, ignore_columns=cfg.ignore_columns)
    sft = [r for r in loaded.rows if r.kind == "sft"]
    _, stats, lengths = tokenize_rows(track(sft, "tokenizing rows", unit="row"), template, tokenizer, cfg)
    report = CheckReport(loaded, stats, cfg, template.name, lengths, pairs=check_pairs(loaded, template, tokenizer, cfg))
    report.empty_replies = [(r.source, r.line) for r in loaded.rows if _has_empty_reply(r)]
    report.duplicates = _duplicates(loaded.rows)
    report.image_tokens = _image_tokens(loaded.rows, tokenizer)
    return report


def _image_tokens(rows: list[Row], tokenizer: Any) -> list[int]:
    """Tokens each image takes, with the model's image processor settings when it has them."""
    refs = [ref for row in rows for ref in row.images or []]
    if not refs:
        return []
    from tunelab.vision.preprocess import ref_tokens, vision_grid

    grid = vision_grid(getattr(tokenizer, "name_or_path", None))
    return [ref_tokens(ref, grid) for ref in refs]


def _has_empty_reply(row: Row) -> bool:
    return any(m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls")
               for m in row.messages or [])  # a turn of tool calls only is not empty


def _duplicates(rows: list[Row]) -> list[tuple[str, int]]:
    """Rows identical to an earlier row (same messages or text)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        body = row.messages if row.messages is not None else row.text
        key = json.dumps([body, row.images], ensure_ascii=False, sort_keys=True)
        if key in seen:
            out.append((row.source, row.line))
        seen.add(key)
    return out


def format_report(report: CheckReport) -> str:
    """The report as plain text lines."""
    loaded, stats, cfg = report.loaded, report.stats, report.cfg
    formats = ", ".join(f"{k} {v}" for k, v in sorted(loaded.counts.items())) or "none"
    lines = [f"chat template: {_describe(report.template)}", f"rows: {len(loaded.rows)} valid ({formats})",
             f"rejected: {report.invalid}"]
    for reason, where in sorted(loaded.rejected.items()):
        lines.append(f"  {reason}: {len(where)} (first at {_places(where)})")
    if cfg.ignore_columns:
        lines.append(_ignored(loaded.ignored, cfg.ignore_columns))
    lines.append(_finding("empty replies", report.empty_replies))
    lines.append(_finding("duplicates", report.duplicates))
    pct = report.percentiles()
    lines.append("tokens per row: " + ("  ".join(f"{k} {v}" for k, v in pct.items()) or "n/a"))
    over = sum(1 for n in report.lengths if n > cfg.cutoff_len)
    lines.append(f"over cutoff ({cfg.cutoff_len}): {over} -> {stats.truncated} truncated at a turn boundary, "
                 f"{stats.dropped_over_cutoff} dropped (overflow={cfg.overflow})")
    if stats.unstable or stats.zero_loss or stats.untrained_turns:
        lines.append(f"not trainable: {stats.unstable} rows the template cannot split into prompt and reply, "
                     f"{stats.zero_loss} with no loss tokens, {stats.untrained_turns} earlier replies left untrained")
    if report.image_tokens:
        lines.append(_image_line(report))
    lines.append(f"examples: {stats.kept} of {len(loaded.rows)} rows")
    lines.append(f"loss tokens: {stats.loss_tokens} of {stats.total_tokens} ({stats.loss_share:.1%}, train_on={cfg.train_on})")
    return "\n".join(lines + (_pair_lines(report.pairs, cfg) if report.pairs else []))


def _image_line(report: CheckReport) -> str:
    """Images, the rows holding them, and their token counts (not in 'tokens per row': the
    template renders each as one <image> marker until the model expands it)."""
    rows = sum(1 for r in report.loaded.rows if r.images)
    spread = "  ".join(f"{k} {v}" for k, v in _percentiles(report.image_tokens).items())
    return (f"images: {len(report.image_tokens)} in {rows} rows; image tokens per image: {spread}; "
            f"{sum(report.image_tokens)} in all")


def _pair_lines(pairs: PairReport, cfg: DataConfig) -> list[str]:
    """The preference section of the report."""
    per = lambda counts: ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"  # noqa: E731
    lengths = lambda xs: "  ".join(f"{k} {v}" for k, v in _percentiles(xs).items()) or "n/a"  # noqa: E731
    st = pairs.stats
    return [f"preference pairs: {sum(pairs.pairs.values())} ({per(pairs.pairs)})",
            f"KTO rows: {sum(pairs.kto.values())} ({per(pairs.kto)})",
            _finding("identical chosen and rejected", pairs.identical),
            _finding("empty sides", pairs.empty_sides),
            f"chosen tokens (prompt + reply): {lengths(pairs.chosen_lengths)}",
            f"rejected tokens (prompt + reply): {lengths(pairs.rejected_lengths)}",
            f"over cutoff ({cfg.cutoff_len}): {st.dropped_over_cutoff} dropped whole (a pair is never cut)",
            f"preference examples: {st.kept} kept" + (f", {st.unstable} the template cannot split" if st.unstable else "")]


def _percentiles(values: list[int]) -> dict[str, int]:
    values = sorted(values)
    at = {"p50": 0.5, "p90": 0.9, "max": 1.0}
    return {name: values[round(q * (len(values) - 1))] for name, q in at.items()} if values else {}


def _describe(template: str) -> str:
    if template == "tokenizer":
        return "the model's own (from its tokenizer)"
    return f"{template} (built-in)" if template in BUILTINS else template


def _ignored(seen: dict[str, int], named: list[str]) -> str:
    """Which data.ignore_columns were seen (and dropped) in how many rows; unseen ones are listed too."""
    found = ", ".join(f"{c} ({seen[c]} rows)" for c in named if c in seen) or "none seen"
    unseen = [c for c in named if c not in seen]
    return f"ignored columns: {found}" + (f"; not in the data: {', '.join(unseen)}" if unseen else "")


def _finding(name: str, where: list[tuple[str, int]]) -> str:
    return f"{name}: {len(where)}" + (f" (first at {_places(where)})" if where else "")


def _places(where: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{src}:{line}" if line else src for src, line in where[:FIRST])
    return shown + (", ..." if len(where) > FIRST else "")


def check_prompts(paths: list[str | Path], template: ChatTemplate, tokenizer: Any, cfg: DataConfig,
                  inputs: dict[str, list[str]], required: dict[str, tuple[str, ...]]) -> tuple[list[str], int]:
    """The report of GRPO prompt rows (data/prompts.py) as lines, and the invalid rows; `inputs` maps
    each column the reward functions read to their names, `required` each function to the columns it needs."""
    from tunelab.data.prompts import read_prompts, tokenize_prompts

    data = read_prompts(paths, inputs, required, cfg.ignore_columns, skip_invalid=True)
    examples, over = tokenize_prompts(data.rows, template, tokenizer, cfg.cutoff_len, 0)
    funcs = sorted({name for names in inputs.values() for name in names} | set(required))
    lines = [f"chat template: {_describe(template.name)}",
             f"GRPO prompts: {len(data.rows)} valid (reward functions: {', '.join(funcs) or 'none'})",
             f"rejected: {sum(map(len, data.rejected.values()))}"]
    lines += [f"  {reason}: {len(where)} (first at {_places(where)})" for reason, where in sorted(data.rejected.items())]
    for column, names in sorted(inputs.items()):
        present = sum(1 for r in data.rows if r.columns.get(column) is not None)
        lines.append(f"column '{column}' (read by {', '.join(names)}): {present} of {len(data.rows)} rows")
    if cfg.ignore_columns:
        lines.append(_ignored(data.ignored, cfg.ignore_columns))
    seen: set[str] = set()
    dupes = [(r.source, r.line) for r in data.rows if json.dumps(r.messages) in seen or seen.add(json.dumps(r.messages))]
    lines.append(_finding("duplicate prompts", dupes))
    lengths = {k: v for k, v in _percentiles([len(e.prompt_ids) for e in examples]).items()}
    lines.append("prompt tokens: " + ("  ".join(f"{k} {v}" for k, v in lengths.items()) or "n/a"))
    lines.append(f"over cutoff ({cfg.cutoff_len}): {over} prompts dropped (training also leaves room for "
                 "grpo.sampling.max_tokens)")
    return lines, sum(map(len, data.rejected.values()))
