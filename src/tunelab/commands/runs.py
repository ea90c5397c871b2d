"""`tunelab runs [DIR]`: the runs under ./runs with their status and final loss."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab runs`."""
    parser.add_argument("root", nargs="?", default="runs", help="folder holding run directories (default: runs)")


def run(args: argparse.Namespace) -> int:
    """Print one line per run, newest first."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tunelab.errors import RunError
    from tunelab.numbers import format_loss
    from tunelab.rundir import list_runs

    runs = list_runs(args.root)
    console = Console()
    if not runs:
        console.print(f"no runs under {args.root}/ (start one with `tunelab train`)")
        return 0
    table = Table("run", "state", "method", "step", "final loss", "base model")
    problems = []
    for run in runs:
        try:
            status = run.status()
        except RunError as err:  # one corrupt run must not hide the others
            status = {}
            problems.append(str(err))
        table.add_row(run.name, run.state, str(status.get("method", "")),
                      f"{status.get('step', 0)}/{status.get('total_steps', '?')}",
                      format_loss(status.get("final_loss")),
                      str(status.get("base_model_spec") or "default"))
    console.print(table)
    for line in problems:
        console.print(f"[yellow]warning:[/] {escape(line)}")
    return 0
