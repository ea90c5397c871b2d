"""GRPO on the embedded Gemma 3 270M with the bundled arithmetic task: held-out reward rises (issue 17).

Gemma 3 270M is a base model: on the bundled prompts it echoes the question and never writes
<answer>N</answer> (0 of 96 T=1 samples), so every group scores 0 and GRPO has no signal. A short
SFT warm start (one step on 8 training prompts answered in the format, merged) makes the format
appear in some rollouts but not yet reliably; GRPO from the merged warm start has to make it reliable.
`tunelab eval` then answers the 48 held-out prompts greedily with the warm start ("base") and the
GRPO adapter ("tuned"), both stopping at </answer> as the rollouts do, and scores them with the run's
own reward functions.
"""

from __future__ import annotations

import json
import time

import pytest

from tunelab.cli import main
from tunelab.config import load_config
from tunelab.data.demo import grpo_heldout_path, grpo_train_path
from tunelab.train.config import TrainConfig
from tunelab.train.trainer import train

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]


def _warm_start(tmp_path):
    """One SFT step on the last 8 training prompts answered as <answer>N</answer>, merged."""
    from tunelab.export.merge import merge_run
    from tunelab.rundir import load_finished

    rows = [json.loads(line) for line in grpo_train_path().read_text().splitlines()][-8:]
    warm = tmp_path / "warm.jsonl"
    warm.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": r["prompt"]},
        {"role": "assistant", "content": f"<answer>{r['answer']}</answer>"}]}) + "\n" for r in rows))
    cfg = load_config(TrainConfig, None, [f"output={tmp_path / 'warm'}", f"datasets=[{warm}]", "max_steps=1",
                                          "micro_batch_size=4", "lr=7e-4", "eval_split=0", "seed=0"])
    return merge_run(load_finished(train(cfg).run_dir), tmp_path / "merged", log=lambda _: None)


def test_grpo_raises_the_held_out_reward_of_the_warm_start(tmp_path, capsys):
    started, cpu = time.time(), time.process_time()
    merged = _warm_start(tmp_path)
    cfg = load_config(TrainConfig, None, [
        "stage=grpo", f"model={merged}", f"output={tmp_path / 'grpo'}", f"datasets=[{grpo_train_path()}]",
        "grpo.reward_funcs=[format,accuracy]", "grpo.sampling.n=8", "grpo.sampling.max_tokens=12",
        "grpo.sampling.stop=[</answer>]", "max_steps=8", "micro_batch_size=2", "lr=3e-4", "schedule=constant",
        "eval_split=0", "seed=0"])
    result = train(cfg)
    assert result.state == "finished"
    assert main(["eval", str(result.run_dir), "--data", str(grpo_heldout_path())]) == 0
    reward = json.loads((result.run_dir / "eval.json").read_text())["reward"]
    steps = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    base, tuned = reward["base"], reward["tuned"]
    with capsys.disabled():
        print(f"\nGemma 3 270M GRPO, {reward['prompts']} held-out prompts ({reward['decoding']}): reward "
              f"{base['reward']:.4f} -> {tuned['reward']:.4f}; format {base['rewards']['format']:.4f} -> "
              f"{tuned['rewards']['format']:.4f}, accuracy {base['rewards']['accuracy']:.4f} -> "
              f"{tuned['rewards']['accuracy']:.4f}; rollout reward per step "
              f"{[round(r['reward'], 3) for r in steps]}; {time.time() - started:.0f} s wall, "
              f"{time.process_time() - cpu:.0f} CPU-s")
    assert reward["prompts"] == 48
    # measured 2026-12-02 (load average 1.5-2): 0.3333 -> 1.0000 (format 16 -> 48 of 48, accuracy 0 -> 0),
    # rollout reward 0.25 at step 1 -> 0.81-1.13 from step 2; 271 s wall (40 s of it the model import), 341 CPU-s
    assert tuned["reward"] > base["reward"] + 0.1, reward["rows"][:4]
