"""A trained reward model (stage=rm) as a GRPO reward function: `grpo.reward_funcs: [runs/NAME]`.

Its rewards, computed on tunelab's engine (scoring mode), are the merged *ForSequenceClassification's
own scores (transformers, the chat template saved with it) of the same prompt + completion; a run that is not a finished reward
model, a missing path or a tokenizer that does not fit stops with the entry named."""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers.reward_run import train_tiny_rm

from tunelab.errors import RewardFunctionError
from tunelab.train.reward_funcs import load_reward_funcs, score_completions

PROMPTS = ["what is 2+2?", "say hi", "name a color"]
COMPLETIONS = ["4", "hello there, my friend", "blue", "2+2 is 4.", "hi", "I cannot name one"]  # two per prompt


@pytest.fixture(scope="module")
def rm(tiny_models, tmp_path_factory):
    """(run dir, merged dir): a LoRA reward model on tiny qwen2 after 2 steps, and its merge."""
    from tunelab.export.merge import merge_run
    from tunelab.rundir import Run

    run_dir, _ = train_tiny_rm(tiny_models["qwen2"], tmp_path_factory.mktemp("grpo-rm") / "rm-run")
    return run_dir, merge_run(Run(run_dir), run_dir / "merged", log=lambda _: None)


def _examples():
    from tunelab.data.prompts import PromptExample

    return [PromptExample([], [{"role": "user", "content": q}], {}, key=k) for k, q in enumerate(PROMPTS)]


def test_rewards_are_the_merged_classifiers_scores(rm):
    """Scored through the path GRPO takes (score_completions, two completions per prompt, one padded
    batch), the rewards equal transformers' AutoModelForSequenceClassification on the merged model
    of each conversation rendered by the tokenizer's own chat template."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir, merged = rm
    funcs = load_reward_funcs([str(run_dir)])
    assert funcs[0].label == "rm-run"
    (got,) = score_completions(funcs, _examples(), COMPLETIONS, [[]] * len(COMPLETIONS), repeat=2)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    want = []
    for i, completion in enumerate(COMPLETIONS):
        chat = [{"role": "user", "content": PROMPTS[i // 2]}, {"role": "assistant", "content": completion}]
        ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)
        with torch.no_grad():
            want.append(model(torch.tensor([ids])).logits[0, 0].item())
    assert got == pytest.approx(want, abs=1e-5)
    assert len({round(g, 4) for g in got}) == len(got)  # the completions are told apart
    (again,) = score_completions(load_reward_funcs([str(merged)]), _examples(), COMPLETIONS,
                                 [[]] * len(COMPLETIONS), repeat=2)
    assert again == pytest.approx(want, abs=1e-5)  # the merged directory as the entry scores the same


def test_the_weights_load_once_on_the_engine(rm):
    """The scores come from tunelab's engine in scoring mode: doubling its score head doubles them."""
    from tunelab.train.grpo_reward_model import EngineScorer

    run_dir, _ = rm
    (f,) = load_reward_funcs([str(run_dir)])
    completions = ["hello", "bye, see you soon"]
    (first,) = score_completions([f], _examples()[:1], completions, [[]] * 2, repeat=2)
    scorer = f.fn.load()[0]
    assert isinstance(scorer, EngineScorer)
    with torch.no_grad():
        scorer.engine.model.lm_head.weight.mul_(2)
    (second,) = score_completions([f], _examples()[:1], completions, [[]] * 2, repeat=2)
    assert f.fn.load()[0] is scorer  # loaded once
    assert second == pytest.approx([2 * s for s in first], abs=1e-5)


def test_a_row_longer_than_the_scoring_budget_is_named(rm):
    from tunelab.train.grpo_reward_model import EngineScorer

    _, merged = rm
    scorer = EngineScorer(merged, tokens=32)
    assert len(scorer([([1] * 10, [2] * 22)])) == 1  # exactly the budget runs
    with pytest.raises(RewardFunctionError, match="prompt \\+ completion of 33 tokens .* budget of 32 tokens"):
        scorer([([1] * 10, [2] * 22), ([1] * 10, [2] * 23)])


def test_an_entry_that_is_not_a_usable_reward_model_is_named(rm, tiny_models, tmp_path):
    from transformers import AutoTokenizer

    run_dir, merged = rm
    sft = tmp_path / "sft-run"
    shutil.copytree(run_dir, sft, ignore=shutil.ignore_patterns("merged"))
    config = sft / "config.yaml"
    config.write_text(config.read_text().replace("stage: rm", "stage: sft"))
    with pytest.raises(RewardFunctionError, match=r"'.*sft-run' is a stage=sft run, not a reward model"):
        load_reward_funcs([str(sft)])
    with pytest.raises(RewardFunctionError, match=r"'runs/no-such-rm' is not a run or a directory"):
        load_reward_funcs(["runs/no-such-rm"])
    with pytest.raises(RewardFunctionError, match=r"is not a reward model: .*config.json names \['Qwen2ForCausalLM'\]"):
        load_reward_funcs([str(tiny_models["qwen2"])])
    wrong = tmp_path / "wrong-tokenizer"
    shutil.copytree(merged, wrong)
    tokenizer = AutoTokenizer.from_pretrained(wrong)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(2000)])
    tokenizer.save_pretrained(wrong)
    with pytest.raises(RewardFunctionError, match=r"'.*wrong-tokenizer': its tokenizer .* wrong tokenizer"):
        load_reward_funcs([str(wrong)])


def test_a_family_the_engine_lacks_is_scored_by_transformers(tiny_models, tmp_path):
    """A Phi-3 reward model (no engine code): the entry warns that it scores with transformers, and its
    rewards are still the classifier's own scores."""
    from transformers import AutoTokenizer, Phi3Config, Phi3ForSequenceClassification

    from tunelab.train.grpo_reward_model import TransformersScorer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["qwen2"])
    torch.manual_seed(0)
    model = Phi3ForSequenceClassification(Phi3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id or 0)).eval()
    model.save_pretrained(tmp_path / "phi3-rm")
    tokenizer.save_pretrained(tmp_path / "phi3-rm")
    (f,) = load_reward_funcs([str(tmp_path / "phi3-rm")])
    with pytest.warns(UserWarning, match="Phi3ForSequenceClassification is not supported by the tunelab engine.*transformers"):
        (got,) = score_completions([f], _examples()[:1], COMPLETIONS[:2], [[]] * 2, repeat=2)
    assert isinstance(f.fn.load()[0], TransformersScorer)
    want = []
    for completion in COMPLETIONS[:2]:
        chat = [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": completion}]
        with torch.no_grad():
            ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)
            want.append(model(torch.tensor([ids])).logits[0, 0].item())
    assert got == pytest.approx(want, abs=1e-5)
