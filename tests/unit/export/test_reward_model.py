"""A reward model (stage=rm) has a score head, not an LM head: merge writes it as a Hugging Face
sequence classifier; serve, chat and GGUF/Ollama export refuse it, naming it, before loading anything."""

from __future__ import annotations

import json

import pytest
from helpers.reward_run import train_tiny_rm

from tunelab.cli import main
from tunelab.errors import RewardModelError

REFUSAL = "is a reward model (stage=rm: a scalar score head, no LM head)"


@pytest.fixture(scope="module")
def rm_run(tiny_models, tmp_path_factory):
    """(run dir, held-out pairs): a LoRA reward model on tiny qwen2 after 2 steps."""
    return train_tiny_rm(tiny_models["qwen2"], tmp_path_factory.mktemp("rm") / "rm-run")


def test_merge_writes_a_sequence_classifier_that_scores_like_the_adapter(rm_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.train.pairs import collate_preference
    from tunelab.train.reward import reward_scores

    run_dir, pairs = rm_run
    assert main(["merge", str(run_dir), "--out", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged/config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and len(config["id2label"]) == 1
    assert not (tmp_path / "merged/generation_config.json").exists()  # it does not generate
    base = json.loads((run_dir / "adapter/adapter_config.json").read_text())["base_model_name_or_path"]
    adapter = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
                                        run_dir / "adapter").eval()
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    batch = collate_preference(range(len(pairs)), pairs, pad_id=0)
    with torch.no_grad():
        want, got = (reward_scores(m, batch["input_ids"], batch["labels"], batch["position_ids"])
                     for m in (adapter, merged))
    assert torch.allclose(got, want, atol=1e-5) and want.std() > 0
    with pytest.raises(RewardModelError, match="merged/config.json is a reward model"):
        from tunelab.engine import LLM

        LLM(tmp_path / "merged")  # the engine refuses the merged classifier by its architecture


def test_export_refuses_the_run_and_its_merged_model(rm_run, tmp_path, capsys):
    run_dir, _ = rm_run
    for spec in (run_dir, run_dir / "merged-for-export"):
        if spec != run_dir:
            main(["merge", str(run_dir), "--out", str(spec)])
        for fmt in ("gguf", "ollama"):
            assert main(["export", str(spec), "--format", fmt, "--out", str(tmp_path / fmt)]) == 1
            err = capsys.readouterr().err
            assert REFUSAL in err and "cannot be exported to GGUF or Ollama" in err
            assert ("run 'rm-run'" if spec == run_dir else "merged-for-export/config.json") in err
            assert not (tmp_path / fmt).exists()


def test_serve_and_chat_refuse_the_run_and_its_adapter(rm_run, tiny_models, capsys):
    from tunelab.commands.chat import resolve_target

    run_dir, _ = rm_run
    for argv in ([str(run_dir)], [str(tiny_models["qwen2"]), "--adapter", f"rm={run_dir}"]):
        assert main(["serve", *argv]) == 1
        err = capsys.readouterr().err
        assert f"run 'rm-run' {REFUSAL}" in err and "cannot be served" in err
    with pytest.raises(RewardModelError, match="cannot be chatted with"):
        resolve_target(str(run_dir), None)
    from tunelab.engine import LLM

    # the adapter folder itself, as the HTTP POST /v1/adapters and --watch hand it to the engine
    with pytest.raises(RewardModelError, match="adapter/adapter_config.json is a reward model"):
        LLM(tiny_models["qwen2"], adapters={"rm": run_dir / "adapter"})
