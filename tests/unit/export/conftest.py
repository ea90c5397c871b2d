"""Fixtures: finished LoRA runs on each tiny model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.run_factory import make_run


@pytest.fixture(scope="session")
def tiny_runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """arch -> a finished LoRA run directory on that tiny model."""
    root = tmp_path_factory.mktemp("runs")
    return {arch: make_run(path, root / f"run-{arch}") for arch, path in tiny_models.items()}
