"""What a person sees while training: a one-screen summary, then a live progress bar."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tunelab.numbers import format_loss


def print_summary(console: Console, facts: dict[str, Any]) -> None:
    """The start-of-run table: model, method, params, data, memory estimate, steps."""
    table = Table(title="tunelab train", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in facts.items():
        table.add_row(key, Text(str(value)))  # Text: paths like [/tmp/x] are not markup
    console.print(table)


def print_outcome(console: Console, outcome: str, step: int, loss: float | None, run_dir: Any) -> None:
    """The run's last line: how it ended, its final loss (rounded) and where it lives."""
    console.print(Text(f"{outcome}: step {step}, loss {format_loss(loss)}, run dir {run_dir}"))


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


class ProgressView:
    """The training step as a `tunelab.progress` step: a live bar updated every step with loss,
    tokens/s and ETA on a terminal; a plain line every `every` steps (and at each eval) otherwise."""

    def __init__(self, console: Console, total: int, start: int, every: int = 10):
        from tunelab.progress import progress

        self._step = progress("train", total, console=console, unit="step", every=every, start=start)

    def __enter__(self) -> "ProgressView":
        self.task = self._step.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._step.__exit__(*exc)

    def update(self, row: dict[str, Any], total: int) -> None:
        """Advance to row['step'] and show its numbers."""
        fields = {"loss": format_loss(row["loss"]), "tok/s": f"{row['tokens_per_s']:.0f}"}
        if "eval_loss" in row:
            self.task.log(f"step {row['step']}/{total} eval_loss {format_loss(row['eval_loss'])}")
        self.task.update(row["step"], total, **fields)
