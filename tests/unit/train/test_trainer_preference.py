"""Preference stages in the one trainer, on a tiny model and the bundled pairs."""

from __future__ import annotations

import json
import math

import pytest

from tunelab.config import load_config
from tunelab.data.config import DataConfig
from tunelab.data.demo import preference_heldout_path, preference_train_path
from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets
from tunelab.errors import ConfigError
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train


def _pairs(model_dir, path, unpair: bool = False) -> list:
    from transformers import AutoTokenizer

    from tunelab.data.templates import ChatTemplate
    from tunelab.data.tokenize import tokenize_preference_rows

    tokenizer, template = AutoTokenizer.from_pretrained(model_dir), ChatTemplate.for_model(model_dir)
    rows = read_datasets([path]).rows
    return tokenize_preference_rows(rows, template, tokenizer, DataConfig(cutoff_len=256), unpair=unpair)[0]


def _cfg(model, out, *extra: str) -> TrainConfig:
    base = [f"model={model}", f"output={out}", "lr=5e-3", "micro_batch_size=4", "seed=0", "data.cutoff_len=256"]
    return load_config(TrainConfig, None, base + list(extra))


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """stage -> a finished run on tiny llama: the 48 bundled pairs trained, the 12 held-out ones held out."""
    model_dir, root = tiny_models["llama"], tmp_path_factory.mktemp("pref")
    examples = (_pairs(model_dir, preference_train_path()), _pairs(model_dir, preference_heldout_path()))
    return {stage: train(_cfg(model_dir, root / stage, f"stage={stage}", f"lr={lr}", "max_steps=12"),
                         examples=examples).run_dir for stage, lr in (("dpo", "5e-3"), ("rm", "1e-2"))}


def test_dpo_raises_held_out_preference_accuracy_pinned(trained, tiny_models):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.train.pairs import preference_accuracy

    model_dir = tiny_models["llama"]
    held = _pairs(model_dir, preference_heldout_path())
    before = preference_accuracy(AutoModelForCausalLM.from_pretrained(model_dir).eval(), held)
    rows = _metrics(trained["dpo"])
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert {"rewards/chosen", "rewards/rejected", "margin", "accuracy"} <= set(rows[0])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), trained["dpo"] / "adapter")
    after = preference_accuracy(tuned.eval(), held)
    # pinned on the 12 held-out pairs: the model's own preference (mean log-prob per token) and
    # DPO's implicit reward accuracy, which is 0 before training (policy == reference)
    assert (before, after) == (pytest.approx(6 / 12), pytest.approx(10 / 12))
    assert rows[-1]["eval_accuracy"] == pytest.approx(12 / 12) and rows[-1]["eval_margin"] > 0.2


def test_eval_reports_held_out_preference_accuracy_before_and_after(trained, capsys):
    from tunelab.cli import main
    from tunelab.eval.report import render_report

    run_dir, last = trained["dpo"], _metrics(trained["dpo"])[-1]
    assert len((run_dir / "heldout.jsonl").read_text().splitlines()) == 12  # the split the trainer held out
    assert main(["eval", str(run_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    pref = json.loads((run_dir / "eval.json").read_text())["preference"]
    # the tuned side is the trainer's own last eval of the same pairs; the base is the reference (reward 0)
    assert pref["pairs"] == 12 and pref["data"] == "the run's held-out split"
    assert pref["tuned"]["accuracy"] == pytest.approx(last["eval_accuracy"])
    assert pref["tuned"]["margin"] == pytest.approx(last["eval_margin"], rel=1e-3, abs=1e-4)  # batch widths differ
    assert (pref["base"]["accuracy"], pref["base"]["margin"]) == (0.0, 0.0)
    assert (pref["base"]["logp_accuracy"], pref["tuned"]["logp_accuracy"]) == (pytest.approx(6 / 12),
                                                                               pytest.approx(10 / 12))  # as above
    assert pref["tuned"]["logp_margin"] > pref["base"]["logp_margin"]
    assert "preference accuracy (12 pairs from the run's held-out split" in out
    assert f"base 0.000 tuned {last['eval_accuracy']:.3f}" in out
    html = render_report(run_dir)
    assert "preference accuracy</td><td>0.0000</td><td>1.0000" in html and 'aria-label="reward margin"' in html
    assert main(["eval", str(run_dir), "--data", str(preference_heldout_path()), "num_generations=0"]) == 0
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["preference"]["data"] == str(preference_heldout_path()) and saved["preference"]["pairs"] == 12
    assert saved["preference"]["tuned"]["accuracy"] == pytest.approx(last["eval_accuracy"])


@pytest.mark.parametrize("stage", ["dpo", "kto", "orpo", "simpo", "rm"])
def test_every_stage_stops_on_sigterm_resumes_exactly_and_merges_and_exports_like_sft(stage, tiny_models, tmp_path,
                                                                                   capsys):
    """From the files, as `tunelab train` runs: eval split, SIGTERM checkpoint, resume, merge, export."""
    import os
    import signal

    from tunelab.cli import main
    from tunelab.rundir import Run

    args = [f"stage={stage}", f"datasets=[{preference_heldout_path()}]", "eval_split=0.25", "max_steps=2",
            "micro_batch_size=2"]
    full = train(_cfg(tiny_models["qwen2"], tmp_path / "full", *args)).run_dir
    stopped = train(_cfg(tiny_models["qwen2"], tmp_path / "run", *args),
                    on_step=lambda row: os.kill(os.getpid(), signal.SIGTERM))  # a real SIGTERM after step 1
    assert (stopped.state, stopped.step) == ("stopped", 1) and (tmp_path / "run/checkpoints/step-1").is_dir()
    resumed = train(resume=tmp_path / "run")
    assert (resumed.state, resumed.step) == ("finished", 2)
    rows, want = _metrics(tmp_path / "run"), _metrics(full)
    keys = ("loss", "rewards/chosen", "rewards/rejected", "margin", "eval_loss", "eval_margin")
    assert [{k: r[k] for k in keys if k in r} for r in rows] == [
        {k: pytest.approx(w[k], rel=1e-5, abs=1e-6) for k in keys if k in w} for w in want]
    assert "eval_margin" in rows[-1]
    assert ("kl" in rows[-1]) == (stage == "kto") and ("eval_accuracy" in rows[-1]) == (stage != "kto")
    held = Run(tmp_path / "run").held_out()  # 12 pairs (kto: 24 replies), a quarter held out, as eval scores them
    assert len(held) == (6 if stage == "kto" else 3) and held == Run(full).held_out()
    adapter = json.loads((tmp_path / "run/adapter/adapter_config.json").read_text())
    assert adapter["task_type"] == ("SEQ_CLS" if stage == "rm" else "CAUSAL_LM")  # the RM head is saved with it
    assert main(["merge", str(tmp_path / "run")]) == 0
    merged = json.loads((tmp_path / "run/merged/config.json").read_text())["architectures"][0]
    assert merged.endswith("ForSequenceClassification" if stage == "rm" else "ForCausalLM")
    code = main(["export", str(tmp_path / "run"), "--quant", "f16", "--out", str(tmp_path / "m.gguf")])
    assert (code, (tmp_path / "m.gguf").is_file()) == ((1, False) if stage == "rm" else (0, True))
    assert ("cannot be exported to GGUF" in capsys.readouterr().err) == (stage == "rm")


def test_reward_model_learns_held_out_pairs_and_reloads_with_its_head(trained, tiny_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.train.pairs import collate_preference
    from tunelab.train.reward import reward_scores

    model_dir = tiny_models["llama"]
    held = _pairs(model_dir, preference_heldout_path())
    last = _metrics(trained["rm"])[-1]
    assert last["eval_accuracy"] == pytest.approx(12 / 12)  # pinned; 0.5 is chance
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    reloaded = PeftModel.from_pretrained(base, trained["rm"] / "adapter").eval()
    batch = collate_preference(range(len(held)), held, pad_id=0)
    with torch.no_grad():
        chosen, rejected = reward_scores(reloaded, batch["input_ids"], batch["labels"], batch["position_ids"]).chunk(2)
    assert (chosen > rejected).float().mean().item() == pytest.approx(last["eval_accuracy"])
    assert (chosen - rejected).mean().item() == pytest.approx(last["eval_margin"], rel=1e-3, abs=1e-4)


def test_reward_model_eval_scores_with_its_head_and_nothing_else(trained, capsys):
    from tunelab.cli import main

    run_dir, last = trained["rm"], _metrics(trained["rm"])[-1]
    assert main(["eval", str(run_dir)]) == 0
    saved = json.loads((run_dir / "eval.json").read_text())
    pref = saved["preference"]
    assert pref["reward"] == "the reward head's score" and pref["pairs"] == 12
    assert pref["tuned"]["accuracy"] == pytest.approx(last["eval_accuracy"])
    assert pref["tuned"]["margin"] == pytest.approx(last["eval_margin"], rel=1e-3, abs=1e-4)  # batch widths differ
    assert pref["base"]["accuracy"] < pref["tuned"]["accuracy"] and "logp_accuracy" not in pref["base"]
    assert "generations" not in saved and "forgetting" not in saved  # no LM head: nothing to generate
    assert "reward head's score" in capsys.readouterr().out


def test_full_fine_tuning_precomputes_the_reference(tiny_models, tmp_path):
    model_dir = tiny_models["llama"]
    examples = _pairs(model_dir, preference_heldout_path())
    cfg = _cfg(model_dir, tmp_path / "run", "stage=dpo", "method=full", "lr=1e-4", "max_steps=2")
    rows = _metrics(train(cfg, examples=(examples, [])).run_dir)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert all(ex.ref_logps is not None and len(ex.ref_logps) == 2 for ex in examples)


@pytest.mark.parametrize("stage", ["dpo", "rm"])  # rm: the reward loader and its new score head over NF4
def test_qlora_preference_stages_train_on_the_nf4_base(stage, tiny_models, tmp_path):
    """method=qlora (NF4 base, on the CPU here): the reference is the adapter-off NF4 model, so DPO's
    first loss is log 2; every stage finishes and saves its adapter."""
    model_dir = tiny_models["llama"]
    examples = _pairs(model_dir, preference_heldout_path())
    cfg = _cfg(model_dir, tmp_path / "run", f"stage={stage}", "method=qlora", "max_steps=2")
    result = train(cfg, examples=(examples, []))
    assert result.state == "finished" and (result.run_dir / "adapter" / "adapter_config.json").is_file()
    rows = _metrics(result.run_dir)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    if stage == "dpo":
        assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_rows_that_do_not_fit_the_stage_are_named_before_the_model_loads(tiny_models, tmp_path):
    import shutil

    # config and tokenizer, no weights: any error below comes before the model would load
    no_weights = shutil.ignore_patterns("*.safetensors")
    model = shutil.copytree(tiny_models["llama"], tmp_path / "no-weights", ignore=no_weights)
    q, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    files = {"sft": {"messages": [q, a]}, "empty": {"prompt": "q", "chosen": "a", "rejected": "  "},
             "bad_label": {"messages": [q, a], "label": "maybe"}}
    good = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})  # line 1 everywhere: errors name line 2
    for name, record in files.items():
        (tmp_path / f"{name}.jsonl").write_text(good + "\n" + json.dumps(record) + "\n")
    sft, empty, bad_label = (tmp_path / f"{n}.jsonl" for n in files)
    for stage, path, match in [("dpo", sft, f"{sft}:2: stage=dpo needs 'chosen' and 'rejected'"),
                               ("kto", sft, f"{sft}:2: field 'label': stage=kto needs a boolean 'label'"),
                               ("kto", bad_label, f"{bad_label}:2: field 'label': expected true or false"),
                               ("dpo", empty, f"{empty}:2: field 'rejected': the reply is empty"),
                               ("sft", preference_heldout_path(), "heldout.jsonl:1: a preference pair")]:
        cfg = _cfg(model, tmp_path / stage, f"stage={stage}", f"datasets=[{path}]", "max_steps=1")
        with pytest.raises(DataError, match=match):
            train(cfg)
    with pytest.raises(ConfigError, match="packing: stage=dpo keeps each pair in its own rows"):
        _cfg(tiny_models["llama"], tmp_path / "p", "stage=dpo", "packing=true")
