"""The trainer end to end on tiny models: loss falls, methods save, resume is exact, errors are clear."""

from __future__ import annotations

import json
import sys

import pytest

from tunelab.config import load_config
from tunelab.errors import ConfigError, TunelabError
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train


def _cfg(model, out, *extra: str) -> TrainConfig:
    base = [f"model={model}", f"output={out}", "max_steps=8", "lr=1e-2", "micro_batch_size=2",
            "data.cutoff_len=64", "seed=0"]
    return load_config(TrainConfig, None, base + list(extra))


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("packing, pinned", [("false", (6.2725, 6.0526)), ("true", (6.2508, 5.9812))])
def test_lora_loss_goes_down_pinned(packing, pinned, tiny_models, tiny_examples, tmp_path):
    cfg = _cfg(tiny_models["llama"], tmp_path / "run", f"packing={packing}")
    result = train(cfg, examples=(tiny_examples, []))
    losses = _losses(result.run_dir)
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.2
    # pinned: catches changes to the loss, batching, data order or LoRA init
    assert (losses[0], losses[-1]) == pytest.approx(pinned, abs=2e-3)
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["final_loss"] == pytest.approx(losses[-1])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["tokens"] > 0


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full", "freeze"])
def test_methods_train_and_save(method, tiny_models, tiny_examples, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_models["qwen2"], tmp_path / "run", f"method={method}", "max_steps=3",
               "freeze_trainable_layers=1")
    result = train(cfg, examples=(tiny_examples, []))
    assert result.state == "finished"
    if method in ("lora", "dora", "qlora"):  # qlora: NF4 base on the CPU (bitsandbytes' CPU backend)
        from peft import PeftModel

        adapter = result.run_dir / "adapter"
        conf = json.loads((adapter / "adapter_config.json").read_text())
        assert conf["base_model_name_or_path"] == str(tiny_models["qwen2"])
        assert conf["use_dora"] == (method == "dora")
        assert (adapter / "tunelab_template.json").exists() and (adapter / "tokenizer.json").exists()
        base = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"])
        model = PeftModel.from_pretrained(base, adapter)
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
    else:
        trained = AutoModelForCausalLM.from_pretrained(result.run_dir / "model")
        base = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"])
        first = [n for n, _ in base.named_parameters() if "layers.0." in n][0]
        last = [n for n, _ in base.named_parameters() if "layers.1." in n][0]
        changed = lambda n: not torch.equal(dict(trained.named_parameters())[n], dict(base.named_parameters())[n])  # noqa: E731
        assert changed(last)
        assert changed(first) == (method == "full")  # freeze keeps layer 0


def test_resume_gives_the_same_losses(tiny_models, tiny_examples, tmp_path):
    """Stop at step 3 (graceful stop, as on SIGTERM), resume, and match the uninterrupted run."""
    extra = ("max_steps=6", "lora.dropout=0.1", "grad_accum=2", "epochs=1")
    full = train(_cfg(tiny_models["gemma3"], tmp_path / "a", *extra), examples=(tiny_examples, []))
    stopped = train(_cfg(tiny_models["gemma3"], tmp_path / "b", *extra), examples=(tiny_examples, []),
                    on_step=lambda row: row["step"] == 3)
    assert stopped.state == "stopped" and (tmp_path / "b/checkpoints/step-3/manifest.json").exists()
    resumed = train(resume=tmp_path / "b", examples=(tiny_examples, []))
    assert resumed.state == "finished" and resumed.step == 6
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=1e-5, abs=1e-6)


def test_corrupt_checkpoint_is_reported_not_loaded(tiny_models, tiny_examples, tmp_path):
    train(_cfg(tiny_models["llama"], tmp_path / "r", "max_steps=4", "save_every=2"), examples=(tiny_examples, []))
    ckpt = tmp_path / "r/checkpoints/step-4/trainable.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-7] + b"garbage")
    with pytest.raises(TunelabError, match=r"step-4 is corrupt: trainable.safetensors"):
        train(resume=tmp_path / "r", overrides=["max_steps=6"], examples=(tiny_examples, []))


def test_keep_last_checkpoints(tiny_models, tiny_examples, tmp_path):
    train(_cfg(tiny_models["llama"], tmp_path / "r", "max_steps=6", "save_every=1", "keep_last=2"),
          examples=(tiny_examples, []))
    assert sorted(p.name for p in (tmp_path / "r/checkpoints").iterdir()) == ["step-5", "step-6"]


def test_nan_loss_stops_with_step_and_hint(tiny_models, tiny_examples, tmp_path):
    cfg = _cfg(tiny_models["llama"], tmp_path / "r", "lr=1e30", "max_grad_norm=0", "schedule=constant")
    with pytest.raises(TunelabError, match=r"loss became (nan|inf) at step \d+; lower lr"):
        train(cfg, examples=(tiny_examples, []))
    assert json.loads((tmp_path / "r/status.json").read_text())["state"] == "failed"


def test_eval_split_logs_eval_loss(tiny_models, tiny_examples, tmp_path):
    result = train(_cfg(tiny_models["llama"], tmp_path / "r", "max_steps=4", "eval_every=2"),
                   examples=(tiny_examples[:12], tiny_examples[12:]))
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4]
    assert all({"lr", "grad_norm", "tokens_per_s", "peak_mem_mb"} <= set(r) for r in rows)


def test_qlora_without_bitsandbytes_fails_before_loading(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed: import raises ImportError
    cfg = load_config(TrainConfig, None, ["model=/nonexistent/model", f"output={tmp_path}/q", "method=qlora"])
    with pytest.raises(TunelabError, match="bitsandbytes"):
        train(cfg)  # the model path does not exist: reaching the loader would raise ModelNotFound


def test_qlora_on_a_bitsandbytes_without_cpu_nf4_names_what_is_missing(tmp_path, monkeypatch):
    import bitsandbytes.functional as bnbf
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU backend is checked only without CUDA")

    def no_backend(*args, **kwargs):
        raise NotImplementedError("no kernel for cpu")

    monkeypatch.setattr(bnbf, "quantize_4bit", no_backend)  # a bitsandbytes build with no CPU NF4 kernels
    cfg = load_config(TrainConfig, None, ["model=/nonexistent/model", f"output={tmp_path}/q", "method=qlora"])
    with pytest.raises(TunelabError, match=r"needs bitsandbytes with a CPU NF4 backend; .* has none "
                                           r"\(NotImplementedError: no kernel for cpu\)"):
        train(cfg)


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'micro_batch_size'"):
        load_config(TrainConfig, None, ["micro_batch=2"])
    with pytest.raises(ConfigError, match="method: 'lorax' is not one of"):
        load_config(TrainConfig, None, ["method=lorax"])
    with pytest.raises(ConfigError, match="lora.rank must be >= 1"):
        load_config(TrainConfig, None, ["lora.rank=0"])
    with pytest.raises(ConfigError, match="dataset_weights has 1 entries for 2 datasets"):
        load_config(TrainConfig, None, ["datasets=a.jsonl,b.jsonl", "dataset_weights=2"])


def test_resume_banner_names_the_folder_being_resumed(tiny_models, tiny_examples, tmp_path):
    import io
    import shutil

    from rich.console import Console

    train(_cfg(tiny_models["llama"], tmp_path / "a", "max_steps=4"), examples=(tiny_examples, []),
          on_step=lambda row: row["step"] == 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # config.yaml in the copy still says output=.../a
    console = Console(file=io.StringIO(), record=True, width=400)
    result = train(resume=tmp_path / "b", examples=(tiny_examples, []), console=console)
    banner = [line for line in console.export_text().splitlines() if line.strip().startswith("run dir")]
    assert result.run_dir == tmp_path / "b" and banner and all(line.rstrip().endswith(str(tmp_path / "b")) for line in banner)
    assert json.loads((tmp_path / "a/status.json").read_text())["state"] == "stopped"
