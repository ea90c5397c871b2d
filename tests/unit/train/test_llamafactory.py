"""LLaMA-Factory's files run unchanged: a training YAML in the style of its examples
(`examples/train_lora/llama3_lora_sft.yaml`), its dataset_info.json, and the export (merge) YAML."""

from __future__ import annotations

import json

import pytest

from tunelab.cli import main
from tunelab.errors import ConfigError

TRAIN_YAML = """\
### model
model_name_or_path: {model}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_zh_demo
template: qwen
cutoff_len: 128
max_samples: 6
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen-tiny/lora/sft
logging_steps: 1
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 2
learning_rate: 1.0e-4
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
"""

EXPORT_YAML = """\
### Note: DO NOT use quantized model or quantization_bit when merging lora adapters

### model
model_name_or_path: {model}
adapter_name_or_path: saves/qwen-tiny/lora/sft
template: qwen
trust_remote_code: true

### export
export_dir: output/qwen_lora_sft
export_size: 5
export_device: cpu  # choices: [cpu, auto]
export_legacy_format: false
"""


@pytest.fixture()
def lf_project(tmp_path, monkeypatch, tiny_models):
    """A LLaMA-Factory working folder: data/dataset_info.json with an alpaca and a sharegpt dataset."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    identity = [{"instruction": "你是谁?", "input": "", "output": "我是 tunelab 助手。"}] * 4
    zh = [{"conversations": [{"from": "human", "value": f"问题 {i}"}, {"from": "gpt", "value": f"回答 {i}"}]}
          for i in range(10)]
    (data / "identity.json").write_text(json.dumps(identity, ensure_ascii=False))
    (data / "alpaca_zh_demo.json").write_text(json.dumps(zh, ensure_ascii=False))
    info = {"identity": {"file_name": "identity.json"},
            "alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json", "formatting": "sharegpt"}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    (tmp_path / "llama3_lora_sft.yaml").write_text(TRAIN_YAML.format(model=tiny_models["qwen2"]))
    (tmp_path / "llama3_lora_sft_merge.yaml").write_text(EXPORT_YAML.format(model=tiny_models["qwen2"]))
    return tmp_path


def test_train_yaml_runs_unchanged_then_export_yaml_merges(lf_project, capsys):
    assert main(["train", "llama3_lora_sft.yaml", "max_steps=2"]) == 0  # our key=value still wins
    out = capsys.readouterr().out
    assert "lora_rank->lora.rank,lora.alpha" in out and "dataset->datasets" in out
    assert "ignored on purpose" in out and "preprocessing_num_workers" in out and "plot_loss" in out
    run = lf_project / "saves/qwen-tiny/lora/sft"
    saved = (run / "config.yaml").read_text()
    assert "max_samples: 6" in saved and "warmup_ratio: 0.1" in saved and "rank: 8" in saved
    assert "eval_split: 0.0" in saved  # no val_size: every row trains, as in LLaMA-Factory
    assert "alpha: 16.0" in saved and "all-linear" in saved  # LLaMA-Factory: alpha = 2 x rank, all
    assert (run / "adapter/adapter_model.safetensors").is_file()
    assert main(["merge", "llama3_lora_sft_merge.yaml"]) == 0
    assert (lf_project / "output/qwen_lora_sft/config.json").is_file()
    _plain_transformers_render_the_training_template(run, lf_project / "output/qwen_lora_sft")


def _plain_transformers_render_the_training_template(run, merged) -> None:
    """Item 8: adapter and merged model carry the chat template in their tokenizer files."""
    from transformers import AutoTokenizer

    from tunelab.rundir import Run

    template = Run(run).chat_template()
    assert template.name == "chatml"  # LLaMA-Factory's `template: qwen`
    conv = [{"role": "user", "content": "你好"}]
    want = template.render(conv, add_generation_prompt=True)
    for folder in (run / "adapter", merged):
        got = AutoTokenizer.from_pretrained(folder).apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert got == want, folder
        assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())


def test_unknown_key_is_named(lf_project, capsys):
    (lf_project / "bad.yaml").write_text("model_name_or_path: x\nstage: sft\nuse_galore: true\n")
    assert main(["train", "bad.yaml"]) == 1
    assert "use_galore" in capsys.readouterr().err


@pytest.mark.parametrize("key,value,match", [
    ("stage", "ppo", "stage 'ppo' is not supported"),
    ("num_train_epochs", "1.5", "whole epochs"),
    ("template", "vicuna", "template 'vicuna' is not built into tunelab"),
    ("resume_from_checkpoint", "saves/x/checkpoint-100", "--resume"),
])
def test_values_without_an_equivalent_are_errors(key, value, match):
    from tunelab.train.llamafactory import train_values

    with pytest.raises(ConfigError, match=match):
        train_values({"model_name_or_path": "m", key: value}, "x.yaml")


def test_dataset_info_names_on_the_command_line_and_pretraining_and_holes(lf_project):
    from tunelab.data.errors import DataError
    from tunelab.data.formats import read_datasets
    from tunelab.train.config import TrainConfig
    from tunelab.config import load_config

    cfg = load_config(TrainConfig, None, ["datasets=data/dataset_info.json#identity,alpaca_zh_demo"])
    assert cfg.datasets == ["data/dataset_info.json#identity,alpaca_zh_demo"]
    data = lf_project / "data"
    (data / "c4.jsonl").write_text('{"text": "纯文本预训练。"}\n{"text": "second"}\n')
    calls = [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": '{"name": "w", "arguments": {}}'},
             {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]
    tools = json.dumps([{"name": "w", "description": "weather", "parameters": {"type": "object"}}])
    (data / "tools.json").write_text(json.dumps([{"conversations": calls, "tools": tools}]))
    mllm = [{"messages": [{"role": "user", "content": "<image>who?"}, {"role": "assistant", "content": "a"}],
             "images": ["mllm_demo_data/1.jpg"]}]
    (data / "mllm.json").write_text(json.dumps(mllm))
    info = json.loads((data / "dataset_info.json").read_text())
    info.update(c4_demo={"file_name": "c4.jsonl", "columns": {"prompt": "text"}},
                glaive={"file_name": "tools.json", "formatting": "sharegpt",
                        "columns": {"messages": "conversations", "tools": "tools"}},
                mllm={"file_name": "mllm.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "images": "images"}})
    (data / "dataset_info.json").write_text(json.dumps(info))
    rows = read_datasets(["data/dataset_info.json#c4_demo"]).rows
    assert [r.text for r in rows] == ["纯文本预训练。", "second"] and rows[0].format == "text"
    (row,) = read_datasets(["data/dataset_info.json#glaive"]).rows
    assert row.tools[0]["function"]["name"] == "w" and row.messages[1]["tool_calls"][0]["function"]["name"] == "w"
    with pytest.raises(DataError, match="mllm.json:1: field 'images\\[0\\]': image file not found"):
        read_datasets(["data/dataset_info.json#mllm"])  # images are read (tests/unit/data/test_image_rows.py)


def test_a_malformed_function_call_turn_names_file_line_and_field(tmp_path):
    from tunelab.data.errors import DataError
    from tunelab.data.formats import read_datasets

    path = tmp_path / "calls.jsonl"
    turns = [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{}"},
             {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]
    path.write_text(json.dumps({"conversations": turns}) + "\n")
    with pytest.raises(DataError, match=r"calls.jsonl:1: field 'conversations\[1\].value': a call needs"):
        read_datasets([path])


@pytest.mark.parametrize("entry,rows", [
    ({"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
     [{"instruction": "q", "chosen": "good", "rejected": "bad"}]),
    ({"columns": {"kto_tag": "label"}}, [{"instruction": "q", "output": "a", "label": True}]),
])
def test_preference_entries_are_never_trained_as_sft(entry, rows, tmp_path):
    from tunelab.data.errors import DataError
    from tunelab.data.formats import read_datasets
    from tunelab.train.dataset import check_row_kinds

    (tmp_path / "pref.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pref": {"file_name": "pref.json", **entry}}))
    loaded = read_datasets([f"{tmp_path}/dataset_info.json#pref"])
    with pytest.raises(DataError, match="stage="):
        check_row_kinds(loaded.rows, "sft")


def test_a_positional_yaml_of_our_own_keys_is_the_config(tmp_path, monkeypatch):
    from tunelab.cli import parse
    from tunelab.commands.train import build_config, take_positional_yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yml").write_text("lr: 0.01\nlora:\n  rank: 4\n")
    args = parse(["train", "run.yml", "lora.rank=8", "--max-steps", "3"])
    take_positional_yaml(args)
    cfg = build_config(args)
    assert (cfg.lr, cfg.lora.rank, cfg.max_steps) == (0.01, 8, 3)  # the command line beats the file
    args = parse(["train", "run.yml", "--config", "other.yaml"])
    with pytest.raises(ConfigError, match="one YAML file per run"):
        take_positional_yaml(args)
