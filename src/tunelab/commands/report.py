"""`tunelab report RUN [--out FILE]`: one self-contained HTML report of a run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory or run name")
    parser.add_argument("--out", type=Path, default=None, help="output HTML file (default RUN/report.html)")


def run(args: argparse.Namespace) -> int:
    from tunelab.eval.report import write_report
    from tunelab.rundir import require_run

    print(write_report(require_run(args.run).path, args.out))
    return 0
