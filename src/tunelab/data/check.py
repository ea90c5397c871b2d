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
from tunelab.data.tokenize import TokenStats, tokenize_rows

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


def check_data(paths: list[str | Path], template: ChatTemplate, tokenizer: Any, cfg: DataConfig) -> CheckReport:
    """Read `paths` (counting invalid rows instead of stopping) and tokenize every valid row."""
    loaded = read_datasets(paths, cfg.format, skip_invalid=True)
    _, stats, lengths = tokenize_rows(loaded.rows, template, tokenizer, cfg)
    report = CheckReport(loaded, stats, cfg, template.name, lengths)
    report.empty_replies = [(r.source, r.line) for r in loaded.rows if _has_empty_reply(r)]
    report.duplicates = _duplicates(loaded.rows)
    return report


def _has_empty_reply(row: Row) -> bool:
    return any(m["role"] == "assistant" and not m["content"].strip() for m in row.messages or [])


def _duplicates(rows: list[Row]) -> list[tuple[str, int]]:
    """Rows identical to an earlier row (same messages or text)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = json.dumps(row.messages if row.messages is not None else row.text, ensure_ascii=False, sort_keys=True)
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
    lines.append(f"examples: {stats.kept} of {len(loaded.rows)} rows")
    lines.append(f"loss tokens: {stats.loss_tokens} of {stats.total_tokens} ({stats.loss_share:.1%}, train_on={cfg.train_on})")
    return "\n".join(lines)


def _describe(template: str) -> str:
    if template == "tokenizer":
        return "the model's own (from its tokenizer)"
    return f"{template} (built-in)" if template in BUILTINS else template


def _finding(name: str, where: list[tuple[str, int]]) -> str:
    return f"{name}: {len(where)}" + (f" (first at {_places(where)})" if where else "")


def _places(where: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{src}:{line}" if line else src for src, line in where[:FIRST])
    return shown + (", ..." if len(where) > FIRST else "")
