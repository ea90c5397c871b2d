"""`tunelab train [--config run.yaml] [key=value | --key value ...] [--resume runs/NAME]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab train`: every TrainConfig key as key=value or --key value."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.train.config import TrainConfig

    parser.add_argument("--resume", metavar="RUN_DIR", help="continue runs/NAME from its last checkpoint")
    add_config_arguments(parser, TrainConfig, positional=True)


def run(args: argparse.Namespace) -> int:
    """Train (or resume); exit 0 when finished, 130 when stopped by a signal."""
    from tunelab.config_flags import config_from_args, config_overrides
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    if args.resume:
        if args.config:
            from tunelab.errors import ConfigError

            raise ConfigError("--resume reads the run's own config.yaml; pass changes as key=value instead of --config")
        result = train(resume=args.resume, overrides=config_overrides(TrainConfig, args))
    else:
        result = train(config_from_args(TrainConfig, args))
    return 0 if result.state == "finished" else 130
