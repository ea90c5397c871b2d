"""`tunelab eval` prints the answers side by side and says where eval.json is."""

from __future__ import annotations

import json

from tunelab.cli import main


def test_eval_prints_answers_side_by_side_and_the_json_path(eval_run, capsys):
    run_dir, data = eval_run
    assert main(["eval", str(run_dir), "--data", str(data), "max_new_tokens=4", "num_generations=2"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the table wraps long cells
    saved = json.loads((run_dir / "eval.json").read_text())
    assert "before (base model)" in out and "after (fine-tuned)" in out and "reference" in out
    for row in saved["generations"]:
        assert row["prompt"] in out and row["reference"] in out
    assert "held-out loss" in out and f"every answer and score: {run_dir / 'eval.json'}" in out
