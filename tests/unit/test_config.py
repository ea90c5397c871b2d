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


@dataclasses.dataclass
class Engine:
    dtype: str = opt("auto", "Weights dtype.")
    max_len: int | None = opt(None, "Context window.", aliases=("context_length",))


@dataclasses.dataclass
class Server:
    port: int = opt(8000, "TCP port.")
    origins: list = opt([], "CORS origins.")
    adapters: dict = opt({}, "name -> path.")
    engine: Engine = opt(Engine, "Engine settings, also flat.", flat=True)


def test_list_and_mapping_values_from_the_command_line():
    cfg = load_config(Run, None, ["lora.targets=[q_proj,k_proj, v_proj,o_proj]"])
    assert cfg.lora.targets == ["q_proj", "k_proj", "v_proj", "o_proj"]
    cfg = load_config(Server, None, ["origins=http://a,http://b", "adapters={a: /x, b: /y}"])
    assert cfg.origins == ["http://a", "http://b"] and cfg.adapters == {"a": "/x", "b": "/y"}
    assert load_config(Server, None, ["adapters=a=/x,b=/y"]).adapters == {"a": "/x", "b": "/y"}
    with pytest.raises(ConfigError, match="adapters: expected a mapping"):
        load_config(Server, None, ["adapters=/x"])
    with pytest.raises(ConfigError, match=r"lora.targets: invalid list"):
        load_config(Run, None, ["lora.targets=[a, b"])


def test_flat_keys_and_aliases_reach_the_nested_config(tmp_path):
    yaml = tmp_path / "s.yaml"
    yaml.write_text("dtype: bfloat16\nengine:\n  context_length: 512\n")
    cfg = load_config(Server, yaml)
    assert cfg.engine == Engine(dtype="bfloat16", max_len=512)
    cfg = load_config(Server, yaml, ["engine.dtype=float16", "context_length=64"])  # CLI beats YAML in any spelling
    assert cfg.engine == Engine(dtype="float16", max_len=64)
    with pytest.raises(ConfigError, match="given twice"):
        load_config(Server, None, ["max_len=1", "engine.context_length=2"])
    with pytest.raises(ConfigError, match=r"unknown config key 'dtyp'; did you mean 'dtype'"):
        load_config(Server, None, ["dtyp=x"])
