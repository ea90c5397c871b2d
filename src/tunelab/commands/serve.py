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
    parser.add_argument("--lora-modules", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                        help="vLLM's spelling of --adapter: NAME=PATH or JSON {\"name\": ..., \"path\": ...}, "
                             "several after one flag")
    parser.add_argument("--enable-lora", action="store_true",
                        help="accepted as in vLLM; tunelab serves adapters without it")
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
    for item in args.lora_modules:
        name, path = _lora_module(item)
        extra.setdefault("adapters", {})[name] = path
    if args.model_arg is not None:
        extra["model"] = args.model_arg
    refuse_reward_models([args.model_arg, *extra.get("adapters", {}).values()])
    return config_from_args(ServeConfig, args, extra)


def refuse_reward_models(specs: list) -> None:
    """A reward-model run (stage=rm) named as MODEL or adapter is its clear error, before anything loads."""
    from tunelab.rundir import find_run

    for spec in specs:
        run = find_run(spec) if spec else None
        if run is not None:
            run.require_generative("served")


def _lora_module(item: str) -> tuple[str, str]:
    """vLLM's --lora-modules item: NAME=PATH, or JSON with name and path."""
    import json

    from tunelab.errors import ConfigError

    if item.lstrip().startswith("{"):
        try:
            spec = json.loads(item)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--lora-modules: invalid JSON {item!r}: {err.msg}") from None
        spec = spec if isinstance(spec, dict) else {}
        name, path = spec.get("name"), spec.get("path")
    else:
        name, _, path = item.partition("=")
    if not name or not path:
        raise ConfigError(f"--lora-modules: expected NAME=PATH or {{\"name\": ..., \"path\": ...}}, got '{item}'")
    return str(name), str(path)


def run(args: argparse.Namespace) -> int:
    """Build the config and serve until interrupted."""
    from tunelab.serve.server import serve_forever

    serve_forever(build_config(args))
    return 0
