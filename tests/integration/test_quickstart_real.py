"""The quick-start on the real Gemma 3 270M: the tuned model names itself (identity gained), keeps
the control answers the base got right, and its general-text perplexity stays within 1.10x."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_quickstart_teaches_identity_and_keeps_the_rest(tmp_path):
    from tunelab.quickstart import QuickstartConfig, quickstart

    result = quickstart(QuickstartConfig(output=str(tmp_path / "qs")))
    identity = [a for a in result.answers if a.identity]
    control = [a for a in result.answers if not a.identity]
    assert len(identity) >= 8 and any(_is_chinese(a.question) for a in identity)
    assert len(control) >= 4 and any(_is_chinese(a.question) for a in control)
    assert not any(a.right(a.before) for a in identity)  # the base model does not know it
    # every held-out paraphrase (EN and ZH) but at most one: precision=auto trains bf16 where the CPU has it
    # natively (avx512_bf16: 10/10) and fp32 elsewhere (an AVX2 VM, 2026-12-02: 9/10, one ZH paraphrase
    # answered "made by OpenAI"), and CI may draw either kind of machine
    assert result.identity_rate >= 0.9, [a.after for a in identity]
    assert result.forgetting["ratio"] <= 1.10, result.forgetting  # general text barely moved
    assert not result.turned_wrong, [(a.question, a.before, a.after) for a in result.turned_wrong]
    assert set(result.phases) == {"import", "train", "answer", "report"}
    status = json.loads((tmp_path / "qs/status.json").read_text())
    assert status["state"] == "finished"
    assert (tmp_path / "qs/adapter/adapter_model.safetensors").exists()
    evaluation = json.loads((tmp_path / "qs/eval.json").read_text())
    assert len(evaluation["generations"]) == len(result.answers) and "forgetting" in evaluation
    html = result.report.read_text()
    assert result.report == tmp_path / "qs/report.html" and "general-text perplexity" in html
