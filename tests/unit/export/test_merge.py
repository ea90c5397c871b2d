"""Merging a run: weights equal the PEFT model's, template and stop ids travel along."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tunelab.data.templates import ChatTemplate
from tunelab.errors import RunError
from tunelab.export.merge import merge_run
from tunelab.rundir import load_finished
from helpers.run_factory import copy_run, write_status

PROMPT = [[5, 17, 42, 99, 123, 7]]


def _logits(model_dir: Path, adapter: Path | None = None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model(torch.tensor(PROMPT)).logits


def test_merged_model_computes_what_base_plus_adapter_computes(tiny_runs, tiny_models, tmp_path):
    run = load_finished(tiny_runs["llama"])
    out = merge_run(run, tmp_path / "merged", log=lambda _m: None)
    merged = _logits(out)
    assert torch.allclose(merged, _logits(tiny_models["llama"], run.adapter_dir), atol=1e-5)
    assert not torch.allclose(merged, _logits(tiny_models["llama"]), atol=1e-3)


def test_merged_dir_carries_template_and_end_of_turn_ids(tiny_runs, tmp_path):
    from transformers import AutoTokenizer

    run = load_finished(tiny_runs["qwen2"])
    out = merge_run(run, tmp_path / "m", log=lambda _m: None)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert ChatTemplate.for_model(out) == run.chat_template() and run.chat_template().name == "chatml"
    assert "<|im_start|>" in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    tok = AutoTokenizer.from_pretrained(out)
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert eos == [tok.convert_tokens_to_ids("<|im_end|>")]
    assert not list(tmp_path.glob(".m.tmp-*")), "temp dir left behind"


def test_qlora_run_merges_into_16_bit_and_says_so(tiny_runs, tmp_path):
    run_dir = copy_run(tiny_runs["gemma3"], tmp_path / "qrun")
    status = json.loads((run_dir / "status.json").read_text())
    write_status(run_dir, Path(status["base_model"]), method="qlora")
    messages: list[str] = []
    out = merge_run(load_finished(run_dir), log=messages.append)
    assert out == run_dir / "merged"
    assert any("dequantized 16-bit" in m for m in messages)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_run_still_training_is_refused(tiny_runs, tiny_models, tmp_path):
    run_dir = copy_run(tiny_runs["llama"], tmp_path / "busy")
    write_status(run_dir, tiny_models["llama"], state="running", pid=os.getpid())
    with pytest.raises(RunError, match="still training"):
        load_finished(run_dir)


def test_missing_adapter_file_is_named(tiny_runs, tmp_path):
    run_dir = copy_run(tiny_runs["llama"], tmp_path / "noweights")
    (run_dir / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(RunError, match="missing adapter file: .*adapter_model.safetensors"):
        load_finished(run_dir)


def test_adapter_from_a_different_base_is_refused(tiny_runs, tmp_path):
    import transformers as tf

    other = tmp_path / "wide-base"
    config = tf.LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(other)
    run_dir = copy_run(tiny_runs["llama"], tmp_path / "mismatch")
    write_status(run_dir, other)
    with pytest.raises(RunError, match="different base model"):
        load_finished(run_dir)


def test_unknown_run_names_where_it_looked(tmp_path):
    with pytest.raises(RunError, match="no run at"):
        load_finished(tmp_path / "nope")
