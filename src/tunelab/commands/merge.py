"""`tunelab merge RUN [--out DIR]`: base + adapter -> a standalone Hugging Face model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory or run name")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default RUN/merged)")


def run(args: argparse.Namespace) -> int:
    from tunelab.export.merge import merge_run
    from tunelab.rundir import load_finished

    merge_run(load_finished(args.run), args.out)
    return 0
