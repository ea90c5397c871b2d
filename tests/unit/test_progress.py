"""tunelab.progress off a terminal: a start line, a line every N items, a done line; nesting works."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from tunelab.progress import progress, track


def _log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_plain_lines_every_n_items_then_done():
    console, out = _log()
    with progress("train", 4, console=console, unit="step", every=2) as task:
        for _ in range(4):
            task.advance(loss=0.11843517)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train ..."
    assert re.fullmatch(r"train: step 2/4 loss 0\.1184 eta \S+", lines[1])
    assert re.fullmatch(r"train: step 4/4 loss 0\.1184 done in [\d.]+s", lines[2])
    assert len(lines) == 3


def test_nested_steps_and_a_failed_step_has_no_done_line():
    console, out = _log()
    with pytest.raises(RuntimeError):
        with progress("outer", console=console):
            list(track(range(3), "inner", console=console, unit="row"))
            raise RuntimeError("boom")
    assert out.getvalue().splitlines() == ["outer ...", "inner ...", out.getvalue().splitlines()[2]]
    assert out.getvalue().splitlines()[2].startswith("inner: row 3/3 done in")


def test_a_terminal_gets_a_live_bar_and_a_done_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress("tokenizing rows", 3, console=console, unit="row") as task:
        task.advance(3)
    text = out.getvalue()
    assert "\x1b[?25l" in text and "3/3" in text  # the cursor hidden for a live bar, its last frame drawn
    assert "tokenizing rows: row 3/3 done in" in text


def test_a_resumed_step_counts_from_where_it_was():
    console, out = _log()
    with progress("train", 10, console=console, unit="step", every=1, start=8) as task:
        assert task.eta() is None  # no rate yet: the 8 earlier steps took no time in this process
        task.advance()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"train: step 9/10 eta \S+", lines[1]) and lines[2].startswith("train: step 9/10 done in")


def test_phases_sum_per_name_in_first_run_order():
    from tunelab.progress import Phases

    phases = Phases()
    for name in ("import", "train", "import"):
        with phases(name):
            pass
    with pytest.raises(ValueError), phases("report"):
        raise ValueError("a failed phase still counts its time")
    assert list(phases.seconds) == ["import", "train", "report"]
    assert re.fullmatch(r"phases: import \S+s, train \S+s, report \S+s, total \S+s", phases.line())
