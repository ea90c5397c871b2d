"""`tunelab pull SOURCE`: add a model to the local store."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a Hugging Face id (org/name), modelscope:ORG/NAME, "
                                       "a local Hugging Face model directory, or a .gguf file")
    parser.add_argument("--name", help="name in the store (default: from the source)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="precision of weights dequantized from a GGUF; float32 is lossless, bfloat16 half "
                             "the disk (default: float32)")


def run(args: argparse.Namespace) -> int:
    from tunelab.store.describe import human_bytes, human_count
    from tunelab.store.pull import pull

    entry = pull(args.source, name=args.name, dtype=args.dtype, say=lambda m: print(m, file=sys.stderr))
    print(f"{entry.name}  {entry.architecture}  {human_count(entry.params)} params  {entry.dtype}  "
          f"{human_bytes(entry.size_bytes)}  {entry.path}")
    return 0
