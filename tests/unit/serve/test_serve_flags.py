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


def _cli(*argv: str):
    from tunelab.cli import parse

    return build_config(parse(["serve", *argv]))


def test_yaml_and_set_reach_host_port_and_backend(tmp_path):
    """Bug 2: argparse defaults used to override YAML and --set for host, port and backend."""
    yaml = tmp_path / "serve.yaml"
    yaml.write_text("host: 0.0.0.0\nport: 9000\nbackend: llamacpp\n")
    cfg = _cli("--config", str(yaml))
    assert (cfg.host, cfg.port, cfg.backend) == ("0.0.0.0", 9000, "llamacpp")
    cfg = _cli("--set", "port=9100", "--set", "host=127.0.0.2", "--set", "backend=vllm")
    assert (cfg.host, cfg.port, cfg.backend) == ("127.0.0.2", 9100, "vllm")
    cfg = _cli("--config", str(yaml), "--set", "port=9100")
    assert (cfg.host, cfg.port, cfg.backend) == ("0.0.0.0", 9100, "llamacpp")  # --set over YAML
    cfg = _cli("--config", str(yaml), "--set", "port=9100", "--port", "9200", "--host", "::1", "--backend", "engine")
    assert (cfg.host, cfg.port, cfg.backend) == ("::1", 9200, "engine")  # flags over both
    assert (_cli().host, _cli().port, _cli().backend) == ("127.0.0.1", 8000, "engine")


def test_engine_keys_flat_or_nested_with_cli_over_yaml(tmp_path):
    yaml = tmp_path / "serve.yaml"
    yaml.write_text("dtype: bfloat16\nmax_num_seqs: 8\ncontext_length: 512\nengine:\n  quantize: int8\n")
    engine = _cli("--config", str(yaml)).engine
    assert (engine.dtype, engine.max_num_seqs, engine.max_model_len, engine.quantize) == ("bfloat16", 8, 512, "int8")
    engine = _cli("--config", str(yaml), "--set", "engine.dtype=float16", "--max-num-seqs", "4",
                  "--engine.quantize=int4", "--n-threads", "2").engine
    assert (engine.dtype, engine.max_num_seqs, engine.quantize, engine.num_threads) == ("float16", 4, "int4", 2)
    with pytest.raises(ConfigError, match="given twice"):
        _cli("--set", "dtype=float16", "--set", "engine.dtype=bfloat16")
    with pytest.raises(ConfigError, match=r"unknown config key 'max_num_seq'; did you mean 'max_num_seqs'"):
        _cli("--set", "max_num_seq=2")


def test_model_positional_flags_and_aliases():
    cfg = _cli("tiny", "--name", "t", "--cors-origin", "http://a", "--cors-origin", "http://b", "--ui")
    assert (cfg.model, cfg.served_name, cfg.cors_origins, cfg.ui) == ("tiny", "t", ["http://a", "http://b"], True)
    assert _cli("--enforce-eager", "tiny").model == "tiny"  # a boolean flag leaves the positional alone
