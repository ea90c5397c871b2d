"""`tunelab report RUN`: one self-contained HTML file (inline CSS and SVG, nothing fetched)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from tunelab.atomic import read_json_object, write_text_atomic
from tunelab.errors import RunError
from tunelab.eval.charts import line_chart
from tunelab.numbers import format_loss
from tunelab.rundir import Run

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#111;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
th{background:#f5f5f5}pre{background:#f7f7f7;padding:10px;overflow:auto;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart .title{font-size:13px;font-weight:600}
.chart .tick{font-size:10px;fill:#555}.chart .legend{font-size:11px}.axis{stroke:#333}.grid{stroke:#eee}
.warn{background:#fef3c7;border:1px solid #f59e0b;padding:8px}.gen{white-space:pre-wrap}
"""


def write_report(run_dir: str | Path, out: Path | None = None) -> Path:
    """Render RUN/report.html (or `out`) from status, config, metrics and eval.json; return its path."""
    run = Run(run_dir)
    return write_text_atomic(Path(out) if out else run.report_file, render_report(run.path))


def render_report(run_dir: Path) -> str:
    """The report's HTML text."""
    run = Run(run_dir)
    status, metrics, config = run.status(), run.metrics(), run.config_text()
    evaluation = read_json_object(run.eval_file, RunError) if run.eval_file.is_file() else {}
    body = [f"<h1>tunelab run: {escape(run_dir.name)}</h1>", _status_table(status),
            "<h2>Training</h2>", _charts(metrics), _evaluation(evaluation),
            "<h2>Run config</h2>", f"<pre>{escape(config) or 'no config.yaml'}</pre>"]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>tunelab report: "
            f"{escape(run_dir.name)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def _status_table(status: dict) -> str:
    keys = ("state", "method", "base_model", "step", "total_steps", "final_loss")
    cells = "".join(f"<tr><th>{k}</th><td>{escape(_cell(k, status[k]))}</td></tr>" for k in keys if k in status)
    return f"<table>{cells}</table>" if cells else "<p>no run status yet</p>"


def _cell(key: str, value) -> str:
    return format_loss(value) if key.endswith("loss") else str(value)


def _series(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    return [(float(m["step"]), float(m[key])) for m in metrics
            if isinstance(m.get(key), (int, float)) and isinstance(m.get("step"), (int, float))]


def _charts(metrics: list[dict]) -> str:
    charts = [line_chart("loss", {"train loss": _series(metrics, "loss"), "eval loss": _series(metrics, "eval_loss")}),
              line_chart("learning rate", {"lr": _series(metrics, "lr")}),
              line_chart("throughput (tokens/s)", {"tokens/s": _series(metrics, "tokens_per_s")})]
    if any("rewards/chosen" in m for m in metrics):  # a preference stage
        charts += [line_chart("rewards", {k: _series(metrics, k) for k in ("rewards/chosen", "rewards/rejected")}),
                   line_chart("reward margin", {"margin": _series(metrics, "margin"),
                                                "eval margin": _series(metrics, "eval_margin")}),
                   line_chart("preference accuracy", {"accuracy": _series(metrics, "accuracy"),
                                                      "eval accuracy": _series(metrics, "eval_accuracy")})]
    return f'<div class="charts">{"".join(charts)}</div>'


def _evaluation(ev: dict) -> str:
    if not ev:
        return "<h2>Evaluation</h2><p>No eval.json yet: run <code>tunelab eval RUN</code>.</p>"
    parts = ["<h2>Evaluation</h2>", _summary_table(ev), _preference_note(ev.get("preference")),
             _reward_note(ev.get("reward"))]
    warning = (ev.get("forgetting") or {}).get("warning")
    if warning:
        parts.append(f'<p class="warn">{escape(warning)}</p>')
    parts.append(_benchmarks_table(ev.get("benchmarks") or {}))
    parts.append(_generations_table(ev.get("generations") or []))
    return "".join(parts)


def _summary_table(ev: dict) -> str:
    rows = []
    held = ev.get("held_out")
    if held:
        rows.append(("held-out loss", held["base"]["loss"], held["tuned"]["loss"]))
        rows.append(("held-out perplexity", held["base"]["perplexity"], held["tuned"]["perplexity"]))
    pref = ev.get("preference")
    if pref:
        rows.append(("preference accuracy", pref["base"]["accuracy"], pref["tuned"]["accuracy"]))
        rows.append(("reward margin", pref["base"]["margin"], pref["tuned"]["margin"]))
        if "logp_accuracy" in pref["base"]:
            rows.append(("preference by mean log-prob per token", pref["base"]["logp_accuracy"],
                         pref["tuned"]["logp_accuracy"]))
    reward = ev.get("reward")
    if reward:
        rows.append(("held-out reward (weighted total)", reward["base"]["reward"], reward["tuned"]["reward"]))
        rows += [(f"reward: {k}", v, reward["tuned"]["rewards"][k]) for k, v in reward["base"]["rewards"].items()]
    forgetting = ev.get("forgetting")
    if forgetting:
        rows.append(("general-text perplexity", forgetting["base"]["perplexity"], forgetting["tuned"]["perplexity"]))
    for key in ("exact_match", "rouge_l", "char_f1"):
        base, tuned = (ev.get("scores") or {}).get("base", {}), (ev.get("scores") or {}).get("tuned", {})
        if key in base:
            rows.append((key, base[key], tuned.get(key, float("nan"))))
    cells = "".join(f"<tr><td>{escape(n)}</td><td>{b:.4f}</td><td>{t:.4f}</td></tr>" for n, b, t in rows)
    return f"<table><tr><th>metric</th><th>base</th><th>tuned</th></tr>{cells}</table>"


def _preference_note(pref: dict | None) -> str:
    if not pref:
        return ""
    return (f"<p>Preference accuracy: share of {pref['pairs']} held-out pairs ({escape(str(pref['data']))}) "
            f"whose chosen reply gets the higher reward; reward = {escape(pref['reward'])}.</p>")


def _reward_note(reward: dict | None) -> str:
    if not reward:
        return ""
    weights = ", ".join(f"{k} x {w:g}" for k, w in reward["weights"].items())
    return (f"<p>Held-out reward: mean over {reward['prompts']} prompts ({escape(str(reward['data']))}), one "
            f"completion each ({escape(reward['decoding'])}), scored by the run's reward functions "
            f"(weighted total = {escape(weights)}).</p>")


def _benchmarks_table(bench: dict) -> str:
    """lm-eval scores by task and metric, base vs tuned (from `tunelab eval --tasks`)."""
    from tunelab.eval.benchmarks import score_rows

    rows = score_rows(bench)
    if not rows:
        return ""
    head = "<tr><th>task</th><th>metric</th><th>base</th><th>tuned</th><th>change</th></tr>"
    cells = "".join(f"<tr><td>{escape(t)}</td><td>{escape(m)}</td><td>{b:.4f}</td><td>{u:.4f}</td>"
                    f"<td>{u - b:+.4f}</td></tr>" for t, m, b, u in rows)
    return f"<h2>Benchmarks (lm-evaluation-harness)</h2><table>{head}{cells}</table>"


def _generations_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = "<tr><th>prompt</th><th>base</th><th>tuned</th><th>reference</th></tr>"
    body = []
    for r in rows:
        score = r.get("tuned_scores", {}).get("rouge_l")
        note = f"<br><small>ROUGE-L {score:.2f}</small>" if score is not None else ""
        cells = [escape(r.get("prompt") or ""), escape(r.get("base") or ""),
                 escape(r.get("tuned") or "") + note, escape(r.get("reference") or "")]
        body.append("<tr>" + "".join(f'<td class="gen">{c}</td>' for c in cells) + "</tr>")
    return f"<h2>Side by side</h2><table>{head}{''.join(body)}</table>"
