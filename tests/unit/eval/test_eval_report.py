"""`tunelab eval` numbers and the self-contained HTML report."""

from __future__ import annotations

import json
import math
import re

from tunelab.cli import main
from tunelab.eval import compare
from tunelab.eval.compare import Pair
from tunelab.eval.config import EvalOptions
from tunelab.eval.evaluate import _prompts, _read_rows, run_eval
from tunelab.eval.report import write_report
from tunelab.rundir import load_finished


def test_eval_writes_base_vs_tuned_numbers(eval_run):
    run_dir, data = eval_run
    result = run_eval(run_dir, EvalOptions(data=data, max_new_tokens=6), log=lambda _m: None)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["held_out"]["base"]["tokens"] == result["held_out"]["tuned"]["tokens"] > 0
    base, tuned = saved["held_out"]["base"], saved["held_out"]["tuned"]
    assert base["loss"] != tuned["loss"]  # the adapter changes the model
    assert math.isclose(base["perplexity"], math.exp(base["loss"]), rel_tol=1e-6)
    assert [g["reference"] for g in saved["generations"]] == ["4", "hi there", "我很好"]
    assert set(saved["scores"]["tuned"]) == {"exact_match", "rouge_l", "char_f1"}
    assert saved["forgetting"]["ratio"] > 0


def test_forgetting_warning_past_threshold(eval_run):
    run_dir, _ = eval_run
    pair = Pair(load_finished(run_dir))
    strict = compare.forgetting_check(pair, threshold=0.0)
    assert strict["warning"] and "catastrophic forgetting" in strict["warning"]
    assert compare.forgetting_check(pair, threshold=1e9)["warning"] is None


def test_base_side_really_is_the_base_model(eval_run, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    pair = Pair(load_finished(eval_run[0]))
    ids = torch.tensor([[5, 6, 7, 8]])
    reference = AutoModelForCausalLM.from_pretrained(tiny_models["qwen2"], dtype=torch.float32)
    with pair.side("base") as model, torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)


def test_report_is_self_contained_html(eval_run, output_dir, capsys):
    run_dir, data = eval_run
    if not (run_dir / "eval.json").exists():
        run_eval(run_dir, EvalOptions(data=data, max_new_tokens=4), log=lambda _m: None)
    assert main(["report", str(run_dir)]) == 0
    path = run_dir / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    html = path.read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "<polyline" in html
    assert "eval loss" in html and "learning rate" in html and "tokens/s" in html
    assert "held-out loss" in html and "Side by side" in html and "我很好" in html
    assert "method: lora" in html  # the run config
    assert not re.search(r"""(src|href)=["']?https?://""", html) and "<script" not in html
    write_report(run_dir, output_dir / "example_report.html")


def test_generations_are_greedy_transformers_output_for_both_sides(eval_run):
    """The engine's side-by-side text equals greedy `generate` of the base and the PEFT model."""
    import torch

    run_dir, data = eval_run
    options = EvalOptions(data=data, max_new_tokens=24, dtype="fp32")
    result = run_eval(run_dir, options, log=lambda _m: None)
    prompts = _prompts(options, _read_rows(data))
    run = load_finished(run_dir)
    template, pair = run.chat_template(), Pair(run)
    stop_ids = template.stop_token_ids(pair.tokenizer)
    from tunelab.data.templates import encode_prompt

    assert len(prompts) == len(result["generations"]) == 3
    for row, item in zip(result["generations"], prompts):
        ids = encode_prompt(template, pair.tokenizer, item["messages"])
        for side in ("base", "tuned"):
            with pair.side(side) as model, torch.no_grad():
                out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                     eos_token_id=stop_ids, pad_token_id=0)[0, len(ids):].tolist()
            cut = next((i for i, t in enumerate(out) if t in stop_ids), len(out))
            assert row[side] == pair.tokenizer.decode(out[:cut], skip_special_tokens=True), side
    assert any(r["base"] != r["tuned"] for r in result["generations"])  # the adapter shows
