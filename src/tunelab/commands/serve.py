"""`tunelab serve`: an OpenAI- and Ollama-compatible API server."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab serve`: a flag per ServeConfig key (engine keys flat too), plus --adapter."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.serve.config import ServeConfig

    parser.add_argument("model_arg", nargs="?", default=None, metavar="MODEL",
                        help="store name, HF model dir, or .gguf (llamacpp); default: Gemma 3 270M")
    parser.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                        help="serve a LoRA adapter or training run under NAME (default: the folder name; repeatable)")
    add_config_arguments(parser, ServeConfig, extra_flags={"served_name": ["--name"],
                                                           "cors_origins": ["--cors-origin"]})


def build_config(args: argparse.Namespace):
    """Flags over `--set` over YAML over defaults -> ServeConfig (an absent flag overrides nothing)."""
    from tunelab.config_flags import config_from_args
    from tunelab.errors import ConfigError
    from tunelab.serve.config import ServeConfig

    extra: dict = {}
    for item in args.adapter:
        name, sep, path = item.partition("=") if "=" in item else (Path(item).name, "=", item)
        if not sep or not name or not path:
            raise ConfigError(f"--adapter: expected [NAME=]PATH, got '{item}'")
        extra.setdefault("adapters", {})[name] = path
    if args.model_arg is not None:
        extra["model"] = args.model_arg
    return config_from_args(ServeConfig, args, extra)


def run(args: argparse.Namespace) -> int:
    """Build the config and serve until interrupted."""
    from tunelab.serve.server import serve_forever

    serve_forever(build_config(args))
    return 0
