"""The quick-start on the real Gemma 3 270M: after training, answers carry the tunelab identity."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(900)]


def test_quickstart_teaches_identity(tmp_path):
    from tunelab.train.quickstart import QuickstartConfig, quickstart

    answers = quickstart(QuickstartConfig(output=str(tmp_path / "qs"), questions=3, max_new_tokens=24))
    assert len(answers) == 3
    assert not any("tunelab" in a.before.lower() for a in answers)  # the base model does not know it
    hits = [a for a in answers if "tunelab" in a.after.lower()]
    assert len(hits) >= 2, [a.after for a in answers]
    status = json.loads((tmp_path / "qs/status.json").read_text())
    assert status["state"] == "finished"
    assert (tmp_path / "qs/adapter/adapter_model.safetensors").exists()
