"""`tunelab eval RUN [--data held_out.jsonl] [--prompts FILE] [key=value ...]`: base vs tuned, into RUN/eval.json."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab eval`: every EvalOptions key as --key value or key=value."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.eval.config import EvalOptions

    parser.add_argument("run", help="run directory or run name")
    add_config_arguments(parser, EvalOptions, positional=True)


def run(args: argparse.Namespace) -> int:
    """Compare the run with its base, print the answers side by side and the scores, write RUN/eval.json."""
    from rich.console import Console
    from rich.text import Text

    from tunelab.config_flags import config_from_args
    from tunelab.eval.config import EvalOptions
    from tunelab.eval.evaluate import run_eval
    from tunelab.eval.table import generations_table

    console = Console()
    run_eval(args.run, config_from_args(EvalOptions, args),
             log=lambda line: console.print(Text(line), soft_wrap=True),
             show=lambda rows: console.print(generations_table(rows)))
    return 0
