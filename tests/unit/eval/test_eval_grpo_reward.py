"""`tunelab eval` on a stage=grpo run: the held-out reward before and after, per reward function and
weighted, from greedy completions of the engine, scored by the run's own reward functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tunelab.config import load_config
from tunelab.data.prompts import PromptExample
from tunelab.eval.config import EvalOptions
from tunelab.eval.evaluate import run_eval
from tunelab.eval.report import render_report
from tunelab.rundir import Run
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train

from helpers.grpo_task import REWARDS, make_grpo_task

PROMPTS = ["who are you?", "what is your name?", "what is 2+2?", "name a color", "say hi", "count to three",
           "capital of france?", "what do you do?", "tell me a joke", "what day is it?", "spell cat",
           "how old are you?"]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, prompts file) of a short GRPO LoRA run on the tiny llama of tests/unit/train/test_grpo.py
    (init std 0.2; reward = share of tokens along one embedding direction), 3 of 12 prompts held out."""
    root = tmp_path_factory.mktemp("grpo-eval")
    model, data = make_grpo_task(root, PROMPTS)
    cfg = load_config(TrainConfig, None, [
        f"model={model}", f"output={root / 'run'}", "stage=grpo", f"datasets=[{data}]", "lr=3e-2",
        "micro_batch_size=4", "max_steps=8", "grpo.sampling.max_tokens=4", "grpo.beta=0.02", "seed=0",
        "eval_split=0.25", "data.cutoff_len=128", "precision=fp32", f"grpo.reward_funcs=[{REWARDS}:favoured]",
        "grpo.reward_weights=[2.0]"])
    result = train(cfg, console=Console(quiet=True))
    assert result.state == "finished"
    return result.run_dir, data


def test_held_out_of_a_grpo_run_reads_back_as_prompts(grpo_run):
    held = Run(grpo_run[0]).held_out()
    assert len(held) == 3 and all(isinstance(e, PromptExample) for e in held)
    assert all(e.messages[-1]["role"] == "user" and e.prompt_ids for e in held)


def test_eval_reports_reward_before_and_after_pinned(grpo_run):
    run_dir, data = grpo_run
    lines: list[str] = []
    held = run_eval(run_dir, EvalOptions(dtype="fp32"), log=lines.append)["reward"]
    assert held["prompts"] == 3 and held["data"] == "the run's held-out split"
    assert held["decoding"] == "greedy, up to 4 new tokens"

    result = run_eval(run_dir, EvalOptions(data=data, dtype="fp32"), log=lines.append)
    reward = result["reward"]
    assert reward["prompts"] == len(PROMPTS) and reward["data"] == str(data)
    base, tuned = reward["base"], reward["tuned"]
    assert (base["rewards"]["favoured"], tuned["rewards"]["favoured"]) == pytest.approx(PINNED, abs=1e-4)
    assert tuned["rewards"]["favoured"] > base["rewards"]["favoured"] + 0.1  # training raised it
    assert base["reward"] == pytest.approx(2.0 * base["rewards"]["favoured"])  # grpo.reward_weights=[2.0]
    assert reward["weights"] == {"favoured": 2.0}
    rows = reward["rows"]
    assert sum(r["tuned_reward"] for r in rows) / len(rows) == pytest.approx(tuned["reward"])
    row = rows[0]
    assert result["generations"][0]["tuned"] == row["tuned"]
    assert any(ln.startswith("held-out reward (12 prompts") for ln in lines)
    assert any("reward favoured (weight 2)" in ln for ln in lines)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["reward"]["tuned"]["reward"] == pytest.approx(tuned["reward"])
    html = render_report(run_dir)
    assert "held-out reward (weighted total)" in html and "reward: favoured" in html


def test_a_data_column_no_reward_function_reads_is_an_error_naming_it(grpo_run, tmp_path):
    from tunelab.data.errors import DataError

    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "say hi", "answer": "7"}) + "\n")
    with pytest.raises(DataError, match="answer") as err:
        run_eval(grpo_run[0], EvalOptions(data=data, dtype="fp32"), log=lambda _: None)
    assert str(data) in str(err.value)


PINNED = (0.4167, 0.9792)  # (base, tuned) mean of `favoured` over the 12 prompts, greedy, fp32
