"""`tunelab serve` flags: adapters by NAME=PATH or by a bare run/adapter path."""

from __future__ import annotations

import argparse

import pytest

from tunelab.commands.serve import add_arguments, build_config
from tunelab.errors import ConfigError


def _config(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_config(parser.parse_args(list(argv)))


def test_adapter_named_or_bare_path():
    cfg = _config("--adapter", "mine=runs/a", "--adapter", "runs/quickstart-1")
    assert cfg.adapters == {"mine": "runs/a", "quickstart-1": "runs/quickstart-1"}


@pytest.mark.parametrize("bad", ["=runs/a", "name="])
def test_adapter_flag_errors_name_the_flag(bad):
    with pytest.raises(ConfigError, match=r"--adapter: expected \[NAME=\]PATH"):
        _config("--adapter", bad)
