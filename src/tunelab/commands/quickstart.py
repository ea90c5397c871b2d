"""`tunelab quickstart`: LoRA-tune the embedded Gemma 3 270M on the demo data, show before/after."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tunelab quickstart`: any QuickstartConfig field as key=value."""
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="e.g. epochs=2 lr=2e-3 model=NAME output=runs/qs")


def run(args: argparse.Namespace) -> int:
    """Run the quick-start; exit 0 when it finished, with the report path on stdout."""
    from tunelab.config import load_config
    from tunelab.quickstart import QuickstartConfig, quickstart

    result = quickstart(load_config(QuickstartConfig, None, args.overrides))
    print(result.report)
    return 0
