"""Checkpoint loading: sharded safetensors, dtypes, clear errors for what we cannot run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models.loader import load_model
from tunelab.models.registry import UnsupportedModel


def test_sharded_checkpoint_loads_like_single_file(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    src = tiny_models["llama"]
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded, _ = load_model(tmp_path, torch.float32, torch.device("cpu"))
    single, _ = load_model(src, torch.float32, torch.device("cpu"))
    for (name, p), (_, q) in zip(sharded.state_dict().items(), single.state_dict().items()):
        assert torch.equal(p, q), name


def test_dtype_fp16(tiny_models):
    model, _ = load_model(tiny_models["gemma3"], torch.float16, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_unknown_architecture_names_supported_ones(tiny_models, tmp_path):
    shutil.copytree(tiny_models["llama"], tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModel, match="GPT2LMHeadModel.*supported: LlamaForCausalLM"):
        load_model(tmp_path / "m", torch.float32, torch.device("cpu"))


def test_missing_weights_are_named(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_models["qwen2"], tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["model.norm.weight"]
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TunelabError, match="model.norm.weight"):
        load_model(tmp_path / "m", torch.float32, torch.device("cpu"))
