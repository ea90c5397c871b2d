"""`tunelab export RUN|MODEL --format gguf|ollama --quant Q [--out PATH]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab export`: every ExportConfig key as --key value or key=value."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.export.config import ExportConfig

    parser.add_argument("source", help="run directory or name, or a model (store name or HF directory)")
    add_config_arguments(parser, ExportConfig, positional=True)


def run(args: argparse.Namespace) -> int:
    """Export and print where the result went (the exporter logs as it goes)."""
    from tunelab.config_flags import config_from_args
    from tunelab.export.config import ExportConfig
    from tunelab.export.exporter import export

    cfg = config_from_args(ExportConfig, args)
    export(args.source, cfg.format, cfg.quant, cfg.out, system=cfg.system)
    return 0
