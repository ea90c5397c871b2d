"""`tunelab plan` end to end, its advice, and `tunelab train` refusing a plan that cannot fit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tunelab.cli import main
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.plan import advise, estimate_serving, estimate_training, model_shape, parse_device
from tunelab.train.config import TrainConfig

from tiny_models import TOKENIZER_DIR as TINY_TOKENIZER


def test_plan_llama3_8b_on_24gib_does_not_fit_and_advises(capsys):
    code = main(["plan", "llama3-8b", "--device", "cuda:24GiB", "micro_batch_size=4", "data.cutoff_len=2048"])
    out = capsys.readouterr().out
    assert code == 2
    for term in ("weights", "trainable params", "gradients", "optimizer (AdamW)", "activations",
                 "logits (chunked loss)", "does NOT fit", "gradient_checkpointing=true"):
        assert term in out


def test_every_advised_change_fits_and_is_ranked_by_speed():
    shape, _ = model_shape("llama3-8b")
    cfg = load_config(TrainConfig, None, ["micro_batch_size=8", "data.cutoff_len=2048"])
    device = parse_device("cuda:24GiB")
    changes = advise(shape, cfg, device)
    assert changes and [c.speed for c in changes] == sorted(c.speed for c in changes)
    for change in changes:
        fixed = load_config(TrainConfig, None, ["micro_batch_size=8", "data.cutoff_len=2048",
                                                *change.overrides.split()])
        assert estimate_training(shape, fixed, device).fits


def test_full_fine_tune_of_8b_combines_changes():
    shape, _ = model_shape("llama3-8b")
    cfg = load_config(TrainConfig, None, ["method=full"])
    (change,) = advise(shape, cfg, parse_device("cuda:24GiB"))
    assert change.keys["method"] == "lora" and "micro_batch_size" in change.keys


def test_checkpointing_and_4bit_shrink_the_plan():
    shape, _ = model_shape("qwen2.5-7b")
    device = parse_device("cuda:80GiB")
    base = estimate_training(shape, load_config(TrainConfig, None, []), device)
    ckpt = estimate_training(shape, load_config(TrainConfig, None, ["gradient_checkpointing=true"]), device)
    qlora = estimate_training(shape, load_config(TrainConfig, None, ["method=qlora"]), device)
    terms = lambda est: {t.name: t.bytes for t in est.terms}  # noqa: E731
    assert terms(ckpt)["activations"] < terms(base)["activations"] / 4
    assert terms(qlora)["weights"] < 0.4 * terms(base)["weights"]  # embeddings and head stay bf16


def test_serve_kv_per_token_and_concurrency(capsys):
    shape, _ = model_shape("llama3-8b")
    est = estimate_serving(shape, parse_device("cuda:24GiB"), context=8192)
    assert est.kv_per_token == 2 * 32 * 8 * 128 * 2  # keys+values x layers x kv heads x head_dim x bf16
    assert est.concurrency == est.kv_budget // est.kv_per_token // 8192
    assert main(["plan", "llama3-8b", "--serve", "--device", "cuda:24GiB", "--context", "8192"]) == 0
    assert f"{est.concurrency}  sequences of 8192 tokens" in capsys.readouterr().out


def test_local_config_only_dir_is_planned_offline(tmp_path, tiny_models, capsys):
    (tmp_path / "config.json").write_text((tiny_models["gemma3"] / "config.json").read_text())
    assert main(["plan", str(tmp_path), "--device", "cpu:16GiB", "lora.rank=8"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "fits" in out


def test_unknown_model_and_unknown_key_are_errors(capsys):
    assert main(["plan", "no-such-arch", "--device", "cpu:1GiB"]) == 1
    assert "built-in architectures" in capsys.readouterr().err
    assert main(["plan", "llama3-8b", "lora.rnk=8"]) == 1
    assert "lora.rank" in capsys.readouterr().err
    with pytest.raises(TunelabError, match="cuda:24GiB"):
        parse_device("gpu24")


def test_plan_help_does_not_import_torch():
    code = "import sys, tunelab.cli as c; c._build_parser('plan'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_refuses_a_plan_that_cannot_fit(tiny_models, synthetic_examples, tmp_path):
    from tunelab.plan.guard import PlanDoesNotFit
    from tunelab.train.trainer import train

    long = [type(e)(e.input_ids * 170, e.labels * 170) for e in synthetic_examples] * 10000  # 4080 tokens
    keys = [f"model={tiny_models['llama']}", f"output={tmp_path / 'run'}", "max_steps=1",
            "micro_batch_size=100000", "data.cutoff_len=4096"]
    with pytest.raises(PlanDoesNotFit, match="micro_batch_size=.* grad_accum=") as err:
        train(load_config(TrainConfig, None, keys), examples=(long, []))
    assert "ignore_memory_plan=true" in str(err.value)
    assert not (tmp_path / "run" / "status.json").exists()  # refused before the model was loaded
    # the same settings fit when the examples are short: batches are padded to the longest one
    result = train(load_config(TrainConfig, None, keys), examples=(synthetic_examples, []))
    assert result.state == "finished"
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_ignore_memory_plan_skips_the_check(tiny_models, synthetic_examples, tmp_path):
    from tunelab.plan.guard import check_memory_plan

    keys = [f"model={tiny_models['llama']}", "micro_batch_size=100000", "data.cutoff_len=4096"]
    check_memory_plan(load_config(TrainConfig, None, keys + ["ignore_memory_plan=true"]))
    with pytest.raises(TunelabError, match="memory plan"):
        check_memory_plan(load_config(TrainConfig, None, keys))


def test_train_refuses_before_reading_data_or_weights_and_the_flag_overrides(tiny_models, tmp_path, capsys):
    from tunelab.plan.shape import ARCHITECTURES

    model = tmp_path / "huge"  # a 70B config.json and a tokenizer, no weights: loading them would fail
    shutil.copytree(TINY_TOKENIZER, model)
    (model / "config.json").write_text(json.dumps(ARCHITECTURES["llama3-70b"]))
    argv = ["train", "--model", str(model), "--datasets", str(tmp_path / "absent.jsonl"),
            "--output", str(tmp_path / "run")]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "memory plan: this run needs at least" in err and "ignore_memory_plan=true" in err
    assert "absent.jsonl" not in err
    assert not (tmp_path / "run").exists()
    assert main(argv + ["--ignore-memory-plan"]) != 0  # then it goes on to read the data
    err = capsys.readouterr().err
    assert "memory plan" not in err and "absent.jsonl" in err
    # a plan that fits with short enough examples waits for the data's length (then checked again)
    argv[2] = str(tiny_models["llama"])
    assert main(argv + ["--micro-batch-size", "100000", "--data.cutoff-len", "4096"]) != 0
    err = capsys.readouterr().err
    assert "memory plan" not in err and "absent.jsonl" in err
