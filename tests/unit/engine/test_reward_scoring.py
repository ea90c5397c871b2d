"""The engine's scoring mode: a reward model (*ForSequenceClassification) scores token rows on the
engine (pooling.score_pooling: the last token's final hidden state times the score head), equal to
transformers' own classifier; it is still refused for generation and outside scoring mode."""

from __future__ import annotations

import pytest
import torch

from tunelab.config import build
from tunelab.engine.config import EngineConfig
from tunelab.engine.engine import LLMEngine
from tunelab.errors import RewardModelError
from tunelab.engine.sampling import SamplingParams

# a mixed-length batch: 1 token, across a block boundary (16), and a long row
ROWS = [[5], [3, 9, 27, 81, 2, 6, 18, 54, 11, 33, 99, 7, 21, 63, 8, 24, 72, 15], list(range(2, 60)), [40, 41, 42]]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def reward_model(request, tiny_models, tmp_path_factory):
    """A tiny *ForSequenceClassification (random score head; llama's LM head untied) saved by transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    arch, src = request.param, tiny_models[request.param]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, dtype=torch.float32,
                                                               tie_word_embeddings=arch != "llama")
    out = tmp_path_factory.mktemp(f"rm-{arch}")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out, model.eval()


def _engine(path) -> LLMEngine:
    cfg = build(EngineConfig, {"dtype": "fp32", "device": "cpu", "block_size": 16, "num_blocks": 16,
                               "max_num_batched_tokens": 64})
    return LLMEngine(path, None, cfg, score=True)


def test_scores_equal_the_transformers_classifier(reward_model):
    path, model = reward_model
    engine = _engine(path)
    assert "ForSequenceClassification" in model.config.architectures[0]
    got = [v.item() for v in engine.embed(ROWS)]  # 82 tokens over a 64-token budget: two engine batches
    with torch.no_grad():
        want = [model(torch.tensor([ids])).logits[0, 0].item() for ids in ROWS]
    assert got == pytest.approx(want, abs=1e-5)
    assert len({round(g, 4) for g in got}) == len(got)
    with torch.no_grad():  # the scores come from the engine's own head: doubling it doubles them
        engine.model.lm_head.weight.mul_(2)
    assert [v.item() for v in engine.embed(ROWS)] == pytest.approx([2 * w for w in want], abs=1e-5)


def test_a_reward_model_is_scored_only(reward_model):
    path, _ = reward_model
    engine = _engine(path)
    with pytest.raises(RewardModelError, match="cannot be used for generation"):
        engine.add_request("r", [1, 2, 3], SamplingParams(max_tokens=2))
    with pytest.raises(RewardModelError, match="cannot be loaded by the engine"):
        LLMEngine(path, None, build(EngineConfig, {"dtype": "fp32", "device": "cpu", "num_blocks": 16}))
