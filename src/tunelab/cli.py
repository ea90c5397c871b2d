"""The `tunelab` command: a table of thin subcommands, each imported only when run.

Keeping heavy imports (torch, transformers) out of this module is what makes
`tunelab --help` instant. Each entry names a module in `tunelab.commands` that
defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module under tunelab.commands, one-line help). Only working commands are listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart", "fine-tune the embedded Gemma 3 270M on demo data; show answers before/after"),
    "pull": ("pull", "add a model to the local store: hub id, modelscope:ORG/NAME, local dir or .gguf"),
    "list": ("store_list", "list the models in the local store"),
    "show": ("show", "show a stored model's config, size, chat template and the runs trained on it"),
    "rm": ("rm", "remove a model from the local store"),
    "data": ("data", "check, preview or convert training data (every common format)"),
    "train": ("train", "fine-tune a model (lora, dora, qlora, full, freeze) into runs/NAME"),
    "plan": ("plan", "will it fit? memory breakdown for training (any train keys) or --serve, with advice"),
    "runs": ("runs", "list training runs with their status and final loss"),
    "eval": ("eval", "compare a run with its base: held-out loss, generations side by side, forgetting"),
    "report": ("report", "write a self-contained HTML report of a run (curves, config, eval table)"),
    "chat": ("chat", "chat with a model or a training run in the terminal (streaming, multi-line)"),
    "run": ("run_model", "pull a model when needed, then chat with it (or answer one PROMPT), as `ollama run`"),
    "serve": ("serve", "serve a model and its adapters over an OpenAI- and Ollama-compatible API"),
    "ps": ("ps", "what a running server has loaded, with size and expiry (its /api/ps)"),
    "ui": ("ui", "the web UI: chat, training dashboard, models and serving status in a browser"),
    "merge": ("merge", "fold a run's adapter into its base: a standalone Hugging Face model dir"),
    "export": ("export", "export a run or model to GGUF (f16..q4_k_m) or an Ollama Modelfile bundle"),
    "bench": ("bench", "benchmark a running server: TTFT, ITL, TPOT, throughput"),
}


def _build_parser(command: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The top-level parser, and the chosen command's parser (None when no command is named)."""
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="Fine-tune open LLMs on your own data and serve them locally.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None
    for name, (module, help_text) in COMMANDS.items():
        # no prefix matching: a mistyped flag gets "did you mean", never a silent guess
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        if name == command:  # only the chosen command's module is imported
            _load(module).add_arguments(p)
            chosen = p
    return parser, chosen


def _load(module: str):
    return importlib.import_module(f"tunelab.commands.{module}")


def _chosen_command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def parse(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; an unknown flag raises ConfigError with the closest known flag."""
    parser, chosen = _build_parser(_chosen_command(argv))
    if chosen is not None:
        from tunelab.config_flags import expand_bool_flags

        argv = expand_bool_flags(chosen, argv)
    args, unknown = parser.parse_known_args(argv)
    flags = [u for u in unknown if u.startswith("--")]
    if flags and chosen is not None:
        from tunelab.config_flags import unknown_flag_message
        from tunelab.errors import ConfigError

        raise ConfigError(unknown_flag_message(flags[0], chosen))
    if unknown and isinstance(getattr(args, "overrides", None), list):
        # argparse fills a '*' positional only once; key=value items after a flag land here
        args.overrides, unknown = args.overrides + unknown, []
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from tunelab.errors import TunelabError

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
    except TunelabError as err:  # a mistyped flag: one line, like a mistyped key
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command is None:
        return 0
    from tunelab.progress import quiet_library_bars

    quiet_library_bars()
    try:
        return int(_load(COMMANDS[args.command][0]).run(args) or 0)
    except TunelabError as err:
        if args.debug or os.environ.get("TUNELAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
