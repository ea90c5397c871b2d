"""tunelab's lm-eval backend equals lm-eval's own `hf` backend on a tiny model and local tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'tunelab[lmeval]')")

TASKS = Path(__file__).parents[2] / "assets" / "lmeval"
# mc_5shot: contexts the choices share, longer than a KV block, so they come from the prefix cache;
# gen_3shot: a preamble every generation prompt shares, prefilled once
SPECS = [str(TASKS / f"tiny_{name}.yaml") for name in ("mc", "mc_5shot", "gen", "gen_3shot", "ppl")]


@pytest.fixture(scope="module")
def backends(tiny_models):
    """(ours, hf) on the tiny llama model in fp32; llama's tokenizer setup adds no BOS."""
    from lm_eval.models.huggingface import HFLM

    from tunelab.eval.harness import TunelabLM

    model = str(tiny_models["llama"])
    return TunelabLM(model, dtype="float32"), HFLM(pretrained=model, dtype="float32", batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def requests():
    """request type -> the lm-eval Instances of the local tasks."""
    from tunelab.eval.benchmarks import task_manager
    from lm_eval.tasks import get_task_dict

    by_type: dict[str, list] = {}
    for task in get_task_dict(SPECS, task_manager(SPECS)).values():
        task.build_all_requests(limit=None, rank=0, world_size=1)
        for inst in task.instances:
            by_type.setdefault(inst.request_type, []).append(inst)
    return by_type


def test_loglikelihoods_equal_the_hf_backend(backends, requests):
    ours, hf = (lm.loglikelihood(requests["loglikelihood"], disable_tqdm=True) for lm in backends)
    assert len(ours) == 80
    assert [g for _, g in ours] == [g for _, g in hf]
    assert max(abs(a - b) for (a, _), (b, _) in zip(ours, hf)) < 1e-4


def test_rolling_loglikelihoods_equal_the_hf_backend(backends, requests):
    ours, hf = (lm.loglikelihood_rolling(requests["loglikelihood_rolling"], disable_tqdm=True) for lm in backends)
    assert max(abs(a - b) / abs(b) for a, b in zip(ours, hf)) < 1e-5


def test_generations_equal_the_hf_backend(backends, requests):
    """Each request twice on our side (identical greedy requests run once), once on hf's."""
    ours = backends[0].generate_until(requests["generate_until"] * 2, disable_tqdm=True)
    hf = backends[1].generate_until(requests["generate_until"], disable_tqdm=True)
    assert ours == hf * 2 and any(ours)


def test_task_scores_equal_the_hf_backend(backends):
    from tunelab.eval.benchmarks import evaluate, task_manager

    ours, hf = (evaluate(lm, SPECS, task_manager(SPECS)) for lm in backends)
    assert set(ours) == {"tunelab_tiny_mc", "tunelab_tiny_mc_5shot", "tunelab_tiny_gen", "tunelab_tiny_gen_3shot",
                         "tunelab_tiny_ppl"}
    for task, scores in hf.items():
        assert ours[task].keys() == scores.keys()
        for metric, value in scores.items():
            assert ours[task][metric] == pytest.approx(value, rel=1e-5), (task, metric)


def test_one_token_choices_of_a_shared_context_read_the_first_choice_s_row(backends):
    """One-token choices after one context, likely or not, are read from one prompt's row at the
    context's end (`prompt_logprobs_tokens`), duplicates too: one engine request; scores and greedy
    flags still equal the hf backend's."""
    import torch

    ours, hf = backends
    ctx = list(range(3, 40))  # longer than a KV block: the later prompts read it from the prefix cache
    with torch.no_grad():
        ranked = hf.model(torch.tensor([ctx])).logits[0, -1].argsort(descending=True).tolist()
    choices = ranked[:5] + ranked[-5:]  # five settled by the first prompt's top 20, five that are not
    requests = [(None, ctx, [token]) for token in choices] * 2
    before = ours.llm.engine.stats()["generation_tokens_total"]  # one generated token per engine request
    got = ours._loglikelihood_tokens(requests)
    assert ours.llm.engine.stats()["generation_tokens_total"] - before == 1
    want = hf._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want] and sum(g for _, g in got) == 2
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want)) < 1e-4
