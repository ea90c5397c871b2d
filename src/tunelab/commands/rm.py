"""`tunelab rm NAME`: delete a model from the store (asks first unless --yes)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a model name from `tunelab list`")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    from tunelab.store import Store
    from tunelab.store.describe import human_bytes
    from tunelab.store.remove import remove_model
    from tunelab.store.resolve import require_entry

    store = Store()
    entry = require_entry(args.name, store)
    if not args.yes and not _confirm(f"remove {entry.name} ({human_bytes(entry.size_bytes)}, {entry.path})? [y/N] "):
        print("kept")
        return 1
    remove_model(entry.name, store)
    print(f"removed {entry.name}")
    return 0


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:  # no terminal to answer: the safe answer is no
        return False
