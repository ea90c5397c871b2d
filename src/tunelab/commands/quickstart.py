"""`tunelab quickstart`: LoRA-tune the embedded Gemma 3 270M on the demo data, show before/after."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab quickstart`: every QuickstartConfig key as key=value or --key value."""
    from tunelab.config_flags import add_config_arguments
    from tunelab.quickstart import QuickstartConfig

    add_config_arguments(parser, QuickstartConfig, positional=True)


def run(args: argparse.Namespace) -> int:
    """Run the quick-start; exit 0 when it finished, with the report path on stdout."""
    from tunelab.config_flags import config_from_args
    from tunelab.quickstart import QuickstartConfig, quickstart

    result = quickstart(config_from_args(QuickstartConfig, args))
    print(result.report)
    return 0
