"""`tunelab merge RUN [--out DIR]`: base + adapter -> a standalone Hugging Face model directory.

RUN may also be a `llamafactory-cli export` YAML (model_name_or_path, adapter_name_or_path,
export_dir), run unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory or run name (or a LLaMA-Factory export YAML)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default RUN/merged)")


def run(args: argparse.Namespace) -> int:
    from tunelab.export.merge import merge_run
    from tunelab.rundir import load_finished

    run_spec, out = args.run, args.out
    if str(run_spec).lower().endswith((".yaml", ".yml")):
        run_spec, out = _from_llamafactory(run_spec, out)
    merge_run(load_finished(run_spec), out)
    return 0


def _from_llamafactory(path: str, out: Path | None) -> tuple[str, Path | None]:
    """(run, out) from a LLaMA-Factory export YAML; its model must be the run's base."""
    from tunelab.config import read_yaml
    from tunelab.errors import ConfigError
    from tunelab.rundir import load_finished
    from tunelab.store.resolve import resolve_model
    from tunelab.train.llamafactory import is_llamafactory, merge_values

    data = read_yaml(path)
    if not is_llamafactory(data):
        raise ConfigError(f"{path}: not a LLaMA-Factory export file (no model_name_or_path); "
                          "give `tunelab merge` a run directory or name")
    translated = merge_values(data, path)
    for line in translated.summary(path):
        print(line)
    values = translated.values
    base = load_finished(values["run"]).base_model
    if Path(resolve_model(values["model"])).resolve() != Path(base).resolve():
        raise ConfigError(f"{path}: model_name_or_path {values['model']} is not the base the run was "
                          f"trained on ({base})")
    return values["run"], out or (Path(values["out"]) if "out" in values else None)
