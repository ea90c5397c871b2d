"""Progress for every long step: a live bar on a terminal, plain log lines everywhere else.

    with progress("dequantizing", total=len(tensors), unit="tensor") as task:
        for t in tensors:
            ...
            task.advance()

On a terminal (the console's stream is a tty) this is a rich bar with a spinner, the count, any
extra fields (loss, tok/s) and an ETA; a step nested inside another adds its own row to the same
live display (rich allows one per console). Elsewhere (CI, a log file) it prints one line when a
step starts, a line every `every` items or `interval_s` seconds, and one when it ends, so a log
shows what ran and how long it took without repainting characters.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from tunelab.numbers import format_duration

T = TypeVar("T")
_live: dict[int, Progress] = {}  # id(console) -> the live display its outermost step opened
_console: list[Console] = []


def default_console() -> Console:
    """Where progress goes unless a caller says otherwise: stderr (stdout stays for results),
    one console for the process so that nested steps share one live display."""
    if not _console:
        _console.append(Console(stderr=True))
    return _console[0]


class Task:
    """One step's progress: `advance`/`update` it; it draws a bar or writes lines."""

    def __init__(self, console: Console, description: str, total: int | None, unit: str,
                 every: int, interval_s: float, bar: Progress | None, start: int = 0):
        self.console, self.description, self.total, self.unit = console, description, total, unit
        self.every, self.interval_s, self.bar = every, interval_s, bar
        self.completed, self.start, self.fields = start, start, {}  # start: done before (a resumed run)
        self.started = self.last_line = time.monotonic()
        self.id = bar.add_task(description, total=total, completed=start, extra="") if bar is not None else None

    def advance(self, n: int = 1, **fields: Any) -> None:
        """`n` more items done; `fields` (e.g. loss=0.1234) are shown beside the count."""
        self.update(self.completed + n, **fields)

    def update(self, completed: int | None = None, total: int | None = None, **fields: Any) -> None:
        """Set the count (and the total, once known) and the shown fields."""
        before = self.completed
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.id, completed=self.completed, total=self.total, extra=self._extra(),
                            refresh=True)  # every update is drawn, not only the 10 Hz ticks
        elif self._line_due(before):
            self.log(self._status())

    def log(self, message: str) -> None:
        """A line above the bar (or in the log), e.g. an eval result."""
        self.console.print(Text(message), soft_wrap=True, highlight=False)

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None while unknown."""
        if not self.total or self.completed <= self.start:
            return None
        rate = (time.monotonic() - self.started) / (self.completed - self.start)  # seconds per item, this run
        return rate * max(self.total - self.completed, 0)

    def _line_due(self, before: int) -> bool:
        if self.total and self.completed >= self.total:
            return False  # the done line says it
        if self.every:  # a line every N items (train: every log_every steps)
            return self.completed // self.every > before // self.every
        return time.monotonic() - self.last_line >= self.interval_s

    def _status(self) -> str:
        self.last_line = time.monotonic()
        eta = self.eta()
        late = f"eta {format_duration(eta)}" if eta is not None and self.completed != self.total else ""
        return " ".join(p for p in (f"{self.description}: {self._count()}", self._extra(), late) if p)

    def _count(self) -> str:
        unit = f"{self.unit} " if self.unit else ""
        return f"{unit}{self.completed}/{self.total}" if self.total else f"{unit}{self.completed}"

    def _extra(self) -> str:
        return "  ".join(f"{k.replace('_', ' ')} {_show(v)}" for k, v in self.fields.items())

    def _close(self, failed: bool, nested: bool) -> None:
        if nested:
            self.bar.remove_task(self.id)  # the row goes; the line below says how it ended
        if not failed:
            parts = [f"{self.description}:", self._count() if self.completed else "", self._extra(),
                     f"done in {format_duration(time.monotonic() - self.started)}"]
            self.log(" ".join(p for p in parts if p))


def _show(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _bar(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[extra]}", markup=False), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)


@contextmanager
def progress(description: str, total: int | None = None, *, console: Console | None = None, unit: str = "",
             every: int = 0, interval_s: float = 15.0, start: int = 0) -> Iterator[Task]:
    """Show one long step while the block runs; `total=None` is a spinner without an ETA."""
    console = console or default_console()
    outer = id(console) not in _live and console.is_terminal
    if outer:
        _live[id(console)] = _bar(console)
    elif not console.is_terminal:
        console.print(Text(f"{description} ..."), soft_wrap=True, highlight=False)
    task = Task(console, description, total, unit, every, interval_s, _live.get(id(console)), start)
    if outer:
        task.bar.start()  # after the task exists, so the first frame already shows it
    failed = True
    try:
        yield task
        failed = False
    finally:
        if outer:
            _live.pop(id(console)).stop()  # draws the last frame, then clears it (transient)
        task._close(failed, nested=task.bar is not None and not outer)


def quiet_library_bars() -> None:
    """Off a terminal, turn off the libraries' own tqdm bars (transformers' "Loading weights", hub
    downloads): in a log they are \\r-repainted noise, and tunelab's plain lines say the same."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported


def track(items: Iterable[T], description: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Yield from `items`, advancing a `progress` step per item (total defaults to len(items))."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, **kwargs) as task:
        for item in items:
            yield item
            task.advance()


class Phases:
    """Wall time of a command's named phases, summed per name, for one summary line at the end:

        phases = Phases()
        with phases("train"):
            ...
        console.print(phases.line())   # "phases: train 1m02s, total 1m02s"
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def line(self) -> str:
        """'phases: import 0.1s, train 1m02s, ..., total 1m30s' (the order phases first ran)."""
        parts = [f"{name} {format_duration(s)}" for name, s in self.seconds.items()]
        return f"phases: {', '.join([*parts, f'total {format_duration(sum(self.seconds.values()))}'])}"
