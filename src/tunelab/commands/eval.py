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
    """Compare the run with its base and write RUN/eval.json."""
    from tunelab.config_flags import config_from_args
    from tunelab.eval.config import EvalOptions
    from tunelab.eval.evaluate import run_eval

    run_eval(args.run, config_from_args(EvalOptions, args))
    return 0
