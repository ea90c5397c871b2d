"""Config precedence (CLI > YAML > defaults), coercion, and unknown-key errors."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from tunelab.config import field_docs, load_config, opt
from tunelab.errors import ConfigError


@dataclasses.dataclass
class Lora:
    rank: int = opt(8, "LoRA rank.")
    targets: list[str] = opt(["all-linear"], "Modules to adapt.")


@dataclasses.dataclass
class Run:
    learning_rate: float = opt(2e-4, "Peak learning rate.")
    schedule: Literal["cosine", "linear"] = opt("cosine", "Learning-rate schedule.")
    packing: bool = opt(True, "Pack examples into rows.")
    max_steps: int | None = opt(None, "Stop after this many steps.")
    lora: Lora = opt(Lora, "LoRA settings.")


def test_defaults_yaml_cli_precedence(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("learning_rate: 0.001\nmax_steps: 10\nlora:\n  rank: 4\n")
    cfg = load_config(Run, cfg_file, ["max_steps=20", "lora.targets=q_proj,v_proj"])
    assert cfg.learning_rate == 0.001  # YAML over default
    assert cfg.max_steps == 20  # CLI over YAML
    assert cfg.lora.rank == 4
    assert cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.schedule == "cosine" and cfg.packing is True


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'; did you mean 'learning_rate'"):
        load_config(Run, None, ["learning_rat=1"])
    with pytest.raises(ConfigError, match=r"'lora.rnak'; did you mean 'lora.rank'"):
        load_config(Run, None, ["lora.rnak=2"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("max_steps=ten", "max_steps: expected int, got 'ten'"),
        ("packing=maybe", "packing: expected true or false"),
        ("schedule=step", "schedule: 'step' is not one of cosine, linear"),
        ("oops", "expected key=value, got 'oops'"),
    ],
)
def test_bad_values_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, [item])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(Run, bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "missing.yaml")


def test_every_field_has_a_doc():
    assert all(field_docs(Run).values())
    assert field_docs(Run)["packing"] == "Pack examples into rows."
