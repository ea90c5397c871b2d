"""`tunelab train [--config run.yaml] [key=value ...] [--resume runs/NAME]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab train`; every TrainConfig field is settable as key=value."""
    parser.add_argument("--config", "-c", help="YAML file with TrainConfig keys (see configs/)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue runs/NAME from its last checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config keys, e.g. model=qwen2.5-0.5b datasets=data.jsonl lora.rank=8 max_steps=100")
    parser.epilog = _keys_help()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Train (or resume); exit 0 when finished, 130 when stopped by a signal."""
    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    if args.resume:
        if args.config:
            from tunelab.errors import ConfigError

            raise ConfigError("--resume reads the run's own config.yaml; pass changes as key=value instead of --config")
        result = train(resume=args.resume, overrides=args.overrides)
    else:
        result = train(load_config(TrainConfig, args.config, args.overrides))
    return 0 if result.state == "finished" else 130


def _keys_help() -> str:
    import dataclasses

    from tunelab.config import field_docs
    from tunelab.train.config import TrainConfig

    lines = ["config keys:"]
    for name, doc in field_docs(TrainConfig).items():
        lines.append(f"  {name:<24} {doc}")
    nested = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory)}
    for prefix, cls in nested.items():
        for name, doc in field_docs(cls).items():
            lines.append(f"  {prefix + '.' + name:<24} {doc}")
    return "\n".join(lines)
