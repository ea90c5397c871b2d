"""`tunelab train [FILE.yaml | --config FILE.yaml] [key=value | --key value ...] [--resume runs/NAME]`.

The YAML may be ours (TrainConfig keys) or LLaMA-Factory's (`llamafactory-cli train` files run
unchanged: `tunelab.train.llamafactory` maps their keys and says which it ignored).
"""

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
    from tunelab.config_flags import config_overrides
    from tunelab.errors import ConfigError
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    take_positional_yaml(args)
    if args.resume:
        if args.config:
            raise ConfigError("--resume reads the run's own config.yaml; pass changes as key=value instead of --config")
        result = train(resume=args.resume, overrides=config_overrides(TrainConfig, args))
    else:
        result = train(build_config(args))
    return 0 if result.state == "finished" else 130


def take_positional_yaml(args: argparse.Namespace) -> None:
    """`tunelab train run.yaml`: a positional .yaml/.yml file is the --config file."""
    from tunelab.errors import ConfigError

    files = [o for o in args.overrides if "=" not in o and o.lower().endswith((".yaml", ".yml"))]
    if not files:
        return
    if len(files) > 1 or args.config:
        raise ConfigError(f"one YAML file per run, got {', '.join(files + ([args.config] if args.config else []))}")
    args.overrides = [o for o in args.overrides if o != files[0]]
    args.config = files[0]


def build_config(args: argparse.Namespace):
    """Defaults < YAML (ours, or LLaMA-Factory's mapped onto ours) < the command line."""
    from tunelab.config import canonical, load_config, merge, read_yaml
    from tunelab.config_flags import config_from_args, config_overrides
    from tunelab.train.config import TrainConfig
    from tunelab.train.llamafactory import is_llamafactory, train_values

    data = read_yaml(args.config) if args.config else {}
    if not is_llamafactory(data):
        return config_from_args(TrainConfig, args)
    translated = train_values(data, args.config)
    for line in translated.summary(args.config):
        print(line)
    values = merge(canonical(TrainConfig, translated.values), config_overrides(TrainConfig, args))
    return load_config(TrainConfig, None, values)
