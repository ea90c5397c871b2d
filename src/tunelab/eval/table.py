"""Answers side by side in the terminal: the quick-start's before/after and `tunelab eval`'s generations."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

BEFORE, AFTER = "before (base model)", "after (fine-tuned)"


def answers_table(rows: list[tuple[str, str, str]], title: str, reference: list[str | None] | None = None) -> Table:
    """(question, before, after) rows as a table; a reference column when any row has one."""
    show_ref = bool(reference) and any(r is not None for r in reference or [])
    headers = ["question", *(["reference"] if show_ref else []), BEFORE, AFTER]
    table = Table(*headers, show_lines=True, title=title)
    for i, (question, before, after) in enumerate(rows):
        ref = [Text(reference[i] or "")] if show_ref and reference else []
        # Text(): model output is shown as written, never read as rich markup
        table.add_row(Text(question), *ref, Text(before or "(nothing)"), Text(after or "(nothing)"))
    return table


def generations_table(generations: list[dict]) -> Table:
    """`tunelab eval`'s generations (prompt, reference, base, tuned) as an answers table."""
    rows = [(g["prompt"], g["base"].strip(), g["tuned"].strip()) for g in generations]
    return answers_table(rows, f"{len(rows)} prompts, greedy", [g.get("reference") for g in generations])
