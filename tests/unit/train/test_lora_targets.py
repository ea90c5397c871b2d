"""LoRA target modules from the command line: a flow list adapts all four; a name that matches nothing fails."""

from __future__ import annotations

import json

import pytest

from tunelab.cli import parse
from tunelab.config_flags import config_from_args
from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train


def _cfg(model, out, targets: str) -> TrainConfig:
    argv = ["train", f"model={model}", f"output={out}", "max_steps=1", "micro_batch_size=2",
            "data.cutoff_len=64", f"lora.target_modules={targets}"]
    return config_from_args(TrainConfig, parse(argv))


def test_flow_list_on_the_command_line_adapts_every_named_module(tiny_models, tiny_examples, tmp_path):
    cfg = _cfg(tiny_models["qwen2"], tmp_path / "run", "[q_proj,k_proj,v_proj,o_proj]")
    result = train(cfg, examples=(tiny_examples, []))
    conf = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(conf["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_a_target_that_matches_nothing_names_it_and_the_linear_layers(tiny_models, tiny_examples, tmp_path):
    cfg = _cfg(tiny_models["qwen2"], tmp_path / "run", "[q_proj,qkv_proj]")
    with pytest.raises(TunelabError, match=r"'qkv_proj' matches no module of this model; its linear layers "
                                           r"are: .*down_proj.*q_proj.*v_proj"):
        train(cfg, examples=(tiny_examples, []))
    assert not (tmp_path / "run").exists()  # failed before the first step: nothing left behind
