"""Losses are printed rounded, through one helper, in `show`, `runs`, `train` and the HTML report."""

from __future__ import annotations

import json

from helpers.run_factory import default_metrics, write_metrics, write_status
from tunelab.cli import main
from tunelab.numbers import format_loss

RAW = 0.11843517422676086


def test_format_loss_rounds_to_four_digits():
    assert format_loss(RAW) == "0.1184"
    assert format_loss(12) == "12.0000"
    assert format_loss(None) == "-" and format_loss("n/a") == "-" and format_loss(True) == "-"


def test_show_runs_and_report_print_the_rounded_loss(tiny_models, tmp_path, capsys):
    base, run = tiny_models["llama"], tmp_path / "runs" / "r1"
    write_status(run, base)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "final_loss": RAW}))
    write_metrics(run, default_metrics())

    assert main(["show", str(base), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "final_loss=0.1184" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "0.1184" in out and "0.11843" not in out
    from tunelab.eval.report import write_report

    html = write_report(run).read_text(encoding="utf-8")
    assert "<td>0.1184</td>" in html and "0.11843" not in html
