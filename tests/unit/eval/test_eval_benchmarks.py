"""`tunelab eval RUN --tasks`: lm-eval scores base vs tuned in eval.json, the terminal and the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.errors import ConfigError, MissingExtra

TASKS = Path(__file__).parents[2] / "assets" / "lmeval"


def test_eval_tasks_put_base_and_tuned_scores_in_eval_json_terminal_and_report(eval_run, capsys, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'tunelab[lmeval]')")
    from tunelab.engine import LLM
    from tunelab.eval.report import render_report

    loaded = []  # the real LLM, counted: the generations and the benchmarks share one adapter engine
    init = LLM.__init__
    monkeypatch.setattr(LLM, "__init__", lambda self, *a, **k: loaded.append(a[0]) or init(self, *a, **k))
    run_dir, _ = eval_run
    tasks = f"{TASKS / 'tiny_mc.yaml'},{TASKS / 'tiny_gen.yaml'}"
    assert main(["eval", str(run_dir), "--tasks", tasks, "max_new_tokens=2", "num_generations=1", "dtype=fp32"]) == 0
    assert len(loaded) == 1
    bench = json.loads((run_dir / "eval.json").read_text())["benchmarks"]
    assert set(bench["base"]) == set(bench["tuned"]) == {"tunelab_tiny_mc", "tunelab_tiny_gen"}
    assert set(bench["base"]["tunelab_tiny_mc"]) == {"acc", "acc_norm"}
    out = capsys.readouterr().out
    acc = bench["tuned"]["tunelab_tiny_mc"]["acc"]
    assert f"tunelab_tiny_mc acc  base {bench['base']['tunelab_tiny_mc']['acc']:.4f}  tuned {acc:.4f}" in out
    html = render_report(run_dir)
    assert "Benchmarks (lm-evaluation-harness)" in html and "tunelab_tiny_gen" in html and f"{acc:.4f}" in html


def test_a_missing_task_file_is_named():
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'tunelab[lmeval]')")
    from tunelab.eval.benchmarks import task_manager

    with pytest.raises(ConfigError, match="task file not found: .*nope.yaml"):
        task_manager([str(TASKS / "tiny_mc.yaml"), "nope.yaml"])


@pytest.mark.slow  # indexing lm-eval's own tasks reads thousands of YAML files (~10-40 s)
def test_an_unknown_task_name_is_named_with_the_closest_ones():
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'tunelab[lmeval]')")
    from tunelab.eval.benchmarks import task_manager

    with pytest.raises(ConfigError, match="unknown lm-eval task 'hellaswagg'.*hellaswag"):
        task_manager(["hellaswagg"])


def test_missing_lm_eval_is_a_missing_extra(monkeypatch):
    from tunelab.eval.benchmarks import require_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"tunelab\[lmeval\]"):
        require_lm_eval()
