"""`tunelab list`: the models in the local store."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the index entries as JSON")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from rich.console import Console
    from rich.table import Table

    from tunelab.store import Store
    from tunelab.store.describe import human_bytes, human_count
    from tunelab.store.staging import leftover_bytes

    store = Store()
    entries = store.entries()
    leftovers = leftover_bytes(store)
    if leftovers and not args.json:
        print(f"{human_bytes(leftovers)} in {store.tmp_dir} was left by killed commands; "
              "the next pull or export removes it")
    if args.json:
        print(json.dumps([dataclasses.asdict(e) for e in entries.values()], indent=2))
        return 0
    if not entries:
        print("no models in the store yet: `tunelab pull SOURCE`, or name none to use the default")
        return 0
    table = Table("name", "arch", "params", "dtype", "size", "template", "source", box=None)
    for e in entries.values():
        missing = "" if e.present else " (missing!)"
        table.add_row(e.name + missing, e.architecture, human_count(e.params), e.dtype,
                      human_bytes(e.size_bytes), "yes" if e.has_chat_template else "no", e.source)
    Console(width=200).print(table)
    return 0
