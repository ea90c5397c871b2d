"""`tunelab serve`: an OpenAI- and Ollama-compatible API server."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab serve`."""
    parser.add_argument("model", nargs="?", default=None,
                        help="store name, HF model dir, or .gguf (llamacpp); default: Gemma 3 270M")
    parser.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                        help="serve a LoRA adapter or training run under NAME (default: the folder name; repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--watch", default=None, metavar="RUNS_DIR",
                        help="serve each finished training run's adapter without a restart")
    parser.add_argument("--backend", choices=["engine", "llamacpp", "vllm"], default="engine")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser requests from ORIGIN (repeatable; CORS is off by default)")
    parser.add_argument("--name", default=None, help="model name clients use (default: folder name)")
    parser.add_argument("--ui", action="store_true", help="also serve the web UI at /ui")
    parser.add_argument("--config", default=None, help="YAML file of ServeConfig keys")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any ServeConfig key, e.g. --set max_pending=128")


def build_config(args: argparse.Namespace):
    """CLI flags over YAML over defaults -> ServeConfig."""
    from tunelab.config import load_config, parse_overrides
    from tunelab.errors import ConfigError
    from tunelab.serve.config import ServeConfig

    adapters = {}
    for item in args.adapter:
        name, sep, path = item.partition("=") if "=" in item else (Path(item).name, "=", item)
        if not sep or not name or not path:
            raise ConfigError(f"--adapter: expected [NAME=]PATH, got '{item}'")
        adapters[name] = path
    flags = {"host": args.host, "port": args.port, "backend": args.backend}
    optional = {"model": args.model, "api_key": args.api_key, "watch": args.watch,
                "served_name": args.name, "adapters": adapters or None,
                "cors_origins": args.cors_origin or None, "ui": getattr(args, "ui", False) or None}
    flags.update({k: v for k, v in optional.items() if v is not None})
    return load_config(ServeConfig, args.config, {**parse_overrides(args.set), **flags})


def run(args: argparse.Namespace) -> int:
    """Build the config and serve until interrupted."""
    from tunelab.serve.server import serve_forever

    serve_forever(build_config(args))
    return 0
