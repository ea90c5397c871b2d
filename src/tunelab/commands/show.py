"""`tunelab show NAME`: a stored model's config, size, chat template and the runs trained on it."""

from __future__ import annotations

import argparse

CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings")
TEMPLATE_LINES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a model name from `tunelab list`, or a local model directory")
    parser.add_argument("--runs-dir", default="runs", help="where to look for runs trained on it (default: runs)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunelab.rundir import runs_for_model
    from tunelab.store import Store
    from tunelab.store.describe import chat_template_of, human_bytes, human_count, read_config
    from tunelab.store.resolve import find_local

    entry, path = find_local(args.name, Store())
    config = read_config(path)
    print(f"name:    {entry.name if entry else args.name}\npath:    {path}")
    if entry:
        print(f"source:  {entry.source}\nparams:  {human_count(entry.params)} ({entry.params:,})\n"
              f"dtype:   {entry.dtype}\nsize:    {human_bytes(entry.size_bytes)}")
    print("config:")
    for key in CONFIG_KEYS:
        if key in config:
            print(f"  {key}: {config[key]}")
    _print_template(chat_template_of(path))
    _print_runs(runs_for_model(path, Path(args.runs_dir)))
    return 0


def _print_template(template: str | None) -> None:
    if template is None:
        print("chat template: none (tunelab picks a built-in one by architecture)")
        return
    lines = template.splitlines()
    print(f"chat template ({len(lines)} lines):")
    for line in lines[:TEMPLATE_LINES]:
        print("  " + line[:160])
    if len(lines) > TEMPLATE_LINES:
        print("  ...")


def _print_runs(runs: list) -> None:
    if not runs:
        print("runs: none")
        return
    from tunelab.numbers import format_loss

    print("runs:")
    for r in runs:
        print(f"  {r.name}  {r.state}  {r.method}  final_loss={format_loss(r.status().get('final_loss'))}")
