"""The quick-start on the real Gemma 3 270M: after training, answers carry the tunelab identity."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_quickstart_teaches_identity(tmp_path):
    from tunelab.quickstart import QuickstartConfig, quickstart

    result = quickstart(QuickstartConfig(output=str(tmp_path / "qs")))
    identity = [a for a in result.answers if "tunelab" in a.reference]
    assert len(identity) >= 8 and any(_is_chinese(a.question) for a in identity)
    assert not any("tunelab" in a.before.lower() for a in result.answers)  # the base model does not know it
    learned = [a for a in identity if "tunelab" in a.after.lower()]
    assert len(learned) >= 0.7 * len(identity), [a.after for a in identity]
    assert any(_is_chinese(a.question) for a in learned)  # Chinese questions too
    status = json.loads((tmp_path / "qs/status.json").read_text())
    assert status["state"] == "finished"
    assert (tmp_path / "qs/adapter/adapter_model.safetensors").exists()
    assert result.report == tmp_path / "qs/report.html" and "<html" in result.report.read_text()
