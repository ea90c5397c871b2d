"""`tunelab runs [DIR]`: the runs under ./runs with their status and final loss."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab runs`."""
    parser.add_argument("root", nargs="?", default="runs", help="folder holding run directories (default: runs)")


def run(args: argparse.Namespace) -> int:
    """Print one line per run, newest first."""
    from rich.console import Console
    from rich.table import Table

    from tunelab.train.rundir import list_runs

    runs = list_runs(args.root)
    console = Console()
    if not runs:
        console.print(f"no runs under {args.root}/ (start one with `tunelab train`)")
        return 0
    table = Table("run", "state", "method", "step", "final loss", "base model")
    for path, status in runs:
        loss = status.get("final_loss")
        table.add_row(path.name, status.get("state", "?"), status.get("method", ""),
                      f"{status.get('step', 0)}/{status.get('total_steps', '?')}",
                      f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                      str(status.get("base_model_spec") or "default"))
    console.print(table)
    return 0
