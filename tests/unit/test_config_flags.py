"""Flags for every config key (`--key value`, `--key=value`, key=value), through the real CLI parser."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from tunelab.cli import main, parse
from tunelab.config_flags import config_from_args, config_overrides
from tunelab.errors import ConfigError
from tunelab.eval.config import EvalOptions
from tunelab.export.config import ExportConfig
from tunelab.serve.config import ServeConfig
from tunelab.train.config import TrainConfig

# command line -> its config class; positional arguments the command needs come first
COMMANDS = {"train": ([], TrainConfig), "serve": ([], ServeConfig), "eval": (["runs/r"], EvalOptions),
            "export": (["runs/r"], ExportConfig)}


def _train(*argv: str) -> TrainConfig:
    return config_from_args(TrainConfig, parse(["train", *argv]))


def test_dashes_are_underscores_and_dots_nest():
    cfg = _train("--max-steps", "100", "--lora.rank", "8", "--lora.target-modules=q_proj,v_proj",
                 "--data.cutoff_len=64", "--micro_batch_size", "2")
    assert (cfg.max_steps, cfg.lora.rank, cfg.data.cutoff_len, cfg.micro_batch_size) == (100, 8, 64, 2)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_list_values_parse_as_lists_in_every_form():
    flow = "[q_proj,k_proj,v_proj,o_proj]"
    for argv in ([f"lora.target_modules={flow}"], ["--set", f"lora.target_modules={flow}"],
                 ["--lora.target-modules", flow], ["--lora.target-modules", "q_proj,k_proj", "--lora.target-modules",
                                                   "[v_proj, o_proj]"]):
        assert _train(*argv).lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"], argv
    assert _train("datasets=[a.jsonl, 'b,c.jsonl']").datasets == ["a.jsonl", "b,c.jsonl"]
    assert _train("dataset_weights=[1, 0.5]", "datasets=a,b").dataset_weights == [1.0, 0.5]
    with pytest.raises(ConfigError, match=r"lora.target_modules: invalid list"):
        _train("lora.target_modules=[q_proj, k_proj")


def test_boolean_flags_take_an_optional_value_and_never_swallow_a_positional():
    assert _train("--packing").packing is True
    assert _train("--packing", "false").packing is False
    assert _train("--packing=no", "max_steps=3").packing is False
    cfg = _train("--packing", "max_steps=3")  # max_steps=3 stays a key=value, not the flag's value
    assert cfg.packing is True and cfg.max_steps == 3


def test_precedence_flags_over_key_value_over_yaml_over_defaults(tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("max_steps: 10\nlr: 0.001\nepochs: 3\nlora:\n  rank: 4\n  alpha: 8\n")
    cfg = _train("--config", str(yaml), "max_steps=20", "lora.rank=6", "--lora.rank", "7", "--set", "epochs=2")
    assert (cfg.max_steps, cfg.lr, cfg.epochs, cfg.lora.rank, cfg.lora.alpha) == (20, 0.001, 2, 7, 8.0)
    assert cfg.warmup_steps == TrainConfig().warmup_steps  # untouched keys keep their defaults


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_flag_means_no_override(command, tmp_path):
    """The Bug 2 pattern (argparse defaults passed as overrides) cannot happen: absent flags are absent."""
    positional, cls = COMMANDS[command]
    args = parse([command, *positional])
    assert config_overrides(cls, args) == {}
    assert config_from_args(cls, args) == cls()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_key_has_a_flag(command):
    positional, cls = COMMANDS[command]
    from tunelab.config_flags import config_leaves

    for leaf in config_leaves(cls):
        flag = "--" + leaf.key.replace("_", "-")
        value = "a=7" if "dict" in str(leaf.tp) else "7"
        assert config_overrides(cls, parse([command, *positional, f"{flag}={value}"])), flag


def test_unknown_flag_suggests_the_closest(capsys):
    assert main(["train", "--lora.rnak", "8"]) == 2
    assert "unknown flag '--lora.rnak'; did you mean '--lora.rank'?" in capsys.readouterr().err
    assert main(["serve", "--prot=9000"]) == 2
    assert "did you mean '--port'?" in capsys.readouterr().err
    assert main(["export", "runs/r", "--quantt", "q4_0"]) == 2
    assert "did you mean '--quant'?" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"unknown config key 'lora_rnk'; did you mean 'lora.rank'"):
        _train("lora_rnk=8")


def test_eval_and_export_take_flags_and_key_values():
    args = parse(["eval", "runs/r", "--max-new-tokens", "5", "num_generations=2", "--dtype=fp32"])
    opts = config_from_args(EvalOptions, args)
    assert (args.run, opts.max_new_tokens, opts.num_generations, opts.dtype) == ("runs/r", 5, 2, "fp32")
    args = parse(["export", "runs/r", "--quant", "q4_k_m", "format=ollama", "--out=o"])
    cfg = config_from_args(ExportConfig, args)
    assert (cfg.quant, cfg.format, str(cfg.out)) == ("q4_k_m", "ollama", "o")


def test_chat_takes_the_engine_keys_of_serve():
    from tunelab.commands.chat import ChatConfig

    chat = config_from_args(ChatConfig, parse(["chat", "m", "--dtype", "float32", "--context-length", "256",
                                               "--speculative", "2", "--set", "quantize=int8"])).engine
    serve = config_from_args(ServeConfig, parse(["serve", "m", "--dtype", "float32", "--context-length", "256",
                                                 "--speculative", "2", "--set", "quantize=int8"])).engine
    assert (chat.dtype, chat.max_model_len, chat.num_speculative_tokens, chat.quantize) == ("float32", 256, 2, "int8")
    assert dataclasses.replace(chat, max_num_seqs=serve.max_num_seqs) == serve
    assert config_from_args(ChatConfig, parse(["chat"])).engine.max_num_seqs == 1  # one conversation


def test_help_lists_every_key_with_doc_and_default():
    out = subprocess.run([sys.executable, "-m", "tunelab", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--lora.rank N" in out and "rank r of the A" in out and "(default: 16)" in out
    assert "--max-steps N" in out and "--max_steps" not in out  # one spelling shown, both accepted
    out = subprocess.run([sys.executable, "-m", "tunelab", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--max-model-len N, --context-length N, --engine.max-model-len N" in out
    assert "--port N" in out and "(default: 8000)" in out
