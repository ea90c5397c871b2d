"""What a person sees while training: a one-screen summary, then a live progress bar."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


def print_summary(console: Console, facts: dict[str, Any]) -> None:
    """The start-of-run table: model, method, params, data, memory estimate, steps."""
    table = Table(title="tunelab train", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in facts.items():
        table.add_row(key, Text(str(value)))  # Text: paths like [/tmp/x] are not markup
    console.print(table)


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


class ProgressView:
    """A rich progress bar with loss, tokens/s and ETA; plain lines when not on a terminal."""

    def __init__(self, console: Console, total: int, start: int):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("step {task.completed}/{task.total}"), BarColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, disable=not self.live,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, loss="-", tps="-")

    def __enter__(self) -> "ProgressView":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, row: dict[str, Any], total: int) -> None:
        """Advance to row['step'] and show its numbers."""
        loss, tps = f"{row['loss']:.4f}", f"{row['tokens_per_s']:.0f}"
        self.progress.update(self.task, completed=row["step"], loss=loss, tps=tps)
        if not self.live and (row["step"] % 10 == 0 or row["step"] == total or "eval_loss" in row):
            extra = f" eval_loss {row['eval_loss']:.4f}" if "eval_loss" in row else ""
            self.console.print(f"step {row['step']}/{total} loss {loss}{extra} {tps} tok/s")
