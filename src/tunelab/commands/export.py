"""`tunelab export RUN|MODEL --format gguf|ollama --quant Q [--out PATH]`."""

from __future__ import annotations

import argparse
from pathlib import Path

QUANT_CHOICES = "f16|bf16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="run directory or name, or a model (store name or HF directory)")
    parser.add_argument("--format", default="gguf", help="gguf (one file) or ollama (GGUF + Modelfile)")
    parser.add_argument("--quant", default="q8_0", help=f"weight type: {QUANT_CHOICES}")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (gguf) or directory (ollama); default under RUN/export/")
    parser.add_argument("--system", default=None, help="SYSTEM prompt for the Ollama Modelfile")


def run(args: argparse.Namespace) -> int:
    from tunelab.export.exporter import export

    export(args.source, args.format, args.quant, args.out, system=args.system)
    return 0
