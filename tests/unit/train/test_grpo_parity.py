"""The GRPO loss equals TRL's GRPOTrainer._compute_loss on the same batch and tiny model, to 1e-5,
in one micro-batch and (losses and gradients) over two accumulated ones.

TRL's trainer is built without its __init__ and given only what `_compute_loss` reads; it
computes the policy's per-token log-probs itself (its fused LM head at the sampling
temperature), ours come from tunelab's chunked head over the completion tokens. The old
(sampling) log-probs are perturbed so the ratio is clipped on some tokens, and the reference
is a second tiny model, so the KL term is not zero.
"""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("trl", reason="TRL is the reference implementation: pip install trl")

from test_preference_parity import PAD, TOL, _bare  # noqa: E402

from tunelab.train.grpo import completion_logps  # noqa: E402
from tunelab.train.grpo_loss import group_advantages, grpo_loss, loss_sum  # noqa: E402
from tunelab.train.pairs import _rows  # noqa: E402

MAX_TOKENS = 7


def _batch(n_prompts: int = 2, group: int = 3, seed: int = 0):
    """Prompts repeated per group member, and completions of 1..MAX_TOKENS tokens."""
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(5, 500) for _ in range(k)]  # noqa: E731 (never the pad id)
    prompts = [ids(rng.randint(3, 8)) for _ in range(n_prompts)]
    return [p for p in prompts for _ in range(group)], [ids(rng.randint(1, MAX_TOKENS)) for _ in range(n_prompts * group)]


def _trl_inputs(prompts, completions) -> dict:
    """TRL's layout: left-padded prompts, right-padded completions."""
    pw, cw = max(map(len, prompts)), max(map(len, completions))
    return {"prompt_ids": torch.tensor([[PAD] * (pw - len(p)) + p for p in prompts]),
            "prompt_mask": torch.tensor([[0] * (pw - len(p)) + [1] * len(p) for p in prompts]),
            "completion_ids": torch.tensor([c + [PAD] * (cw - len(c)) for c in completions]),
            "completion_mask": torch.tensor([[1] * len(c) + [0] * (cw - len(c)) for c in completions])}


def _to_trl_layout(ours: torch.Tensor, completions) -> torch.Tensor:
    """Our (R, T) per-token values (at each row's completion positions) as TRL's (R, max completion)."""
    out = torch.zeros(len(completions), max(map(len, completions)), dtype=ours.dtype)
    for r, c in enumerate(completions):
        row = ours[r][ours[r] != 0]
        out[r, : len(c)] = row
    return out


@pytest.fixture(scope="module")
def models(tiny_models):
    from transformers import AutoModelForCausalLM

    from tiny_models import build_tiny_model

    ref_dir = build_tiny_model("llama", tiny_models["llama"].parent / "llama-grpo-ref", seed=2)
    return (AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval(),
            AutoModelForCausalLM.from_pretrained(ref_dir).eval())


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_matches_trl(loss_type, models):
    import copy

    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    policy, ref = models
    temperature, beta, eps = 0.7, 0.05, (0.2, 0.28)
    prompts, completions = _batch()
    rows = _rows(prompts, completions, PAD)
    logp = completion_logps(policy, rows, temperature)
    with torch.no_grad():
        ref_logp = completion_logps(ref, rows, temperature)
    gen = torch.Generator().manual_seed(1)
    old = logp.detach() + torch.randn(logp.shape, generator=gen) * 0.3 * (logp != 0)  # some ratios clip
    rewards = torch.tensor([[1.0, 0.2], [0.0, 0.5], [1.0, float("nan")], [0.0, 0.1], [0.5, 0.9], [1.0, 0.0]])
    adv = group_advantages(rewards, torch.tensor([1.0, 0.5]), group=3).advantages
    mask = rows["labels"] != -100
    mine = grpo_loss(logp, old, ref_logp, adv, mask, beta, eps, loss_type, MAX_TOKENS)

    model = copy.deepcopy(policy)
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))
    trl = _bare(GRPOTrainer, model, temperature=temperature, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
                importance_sampling_level="token", beta=beta, loss_type=loss_type, epsilon_low=eps[0],
                epsilon_high=eps[1], use_vllm=False, _entropy_bonus_enabled=False, max_completion_length=MAX_TOKENS,
                current_gradient_accumulation_steps=1, args=_Args())
    inputs = {**_trl_inputs(prompts, completions), "advantages": adv,
              "old_per_token_logps": _to_trl_layout(old, completions),
              "ref_per_token_logps": _to_trl_layout(ref_logp, completions)}
    inputs["num_items_in_batch"] = inputs["completion_mask"].sum()
    with torch.no_grad():
        loss = trl._compute_loss(model, inputs)
    torch.testing.assert_close(mine.loss.detach(), loss, **TOL)
    logged = trl._metrics["eval"]
    assert mine.kl.item() == pytest.approx(logged["kl"][0], abs=1e-5)
    assert mine.clip_high.item() == pytest.approx(logged["clip_ratio/high_mean"][0], abs=1e-6)
    assert mine.clip_low.item() == pytest.approx(logged["clip_ratio/low_mean"][0], abs=1e-6)
    assert mine.clip_high.item() + mine.clip_low.item() > 0  # the clipped branch was exercised


class _Args:
    """The GRPOConfig fields `_compute_loss` reads."""

    use_bias_correction_kl = False
    delta = None
    steps_per_generation = 1


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_and_grads_match_trl_over_two_accumulated_micro_batches(loss_type, models):
    """grad_accum = 2: one generation batch of 4 prompts (G = 3) split into two micro-batches with
    different token counts. TRL's dapo divides each micro-batch by the generation batch's tokens
    (num_items_in_batch), the others by the accumulation steps; ours hands the trainer
    loss_sum(...) which it divides by the step's prompts. The summed losses and the accumulated
    gradients are equal to 1e-5."""
    import copy

    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    policy, ref = models
    temperature, beta, eps, G = 0.7, 0.05, (0.2, 0.28), 3
    prompts, completions = _batch(n_prompts=4, group=G, seed=3)
    gen = torch.Generator().manual_seed(4)
    rewards = torch.rand(len(completions), 2, generator=gen)
    adv = group_advantages(rewards, torch.tensor([1.0, 0.5]), group=G).advantages
    step_tokens = sum(map(len, completions))
    halves = [slice(0, 2 * G), slice(2 * G, 4 * G)]
    assert len({sum(map(len, completions[h])) for h in halves}) == 2  # the halves' token counts differ

    mine = copy.deepcopy(policy)
    theirs = copy.deepcopy(policy)
    add_fused_lm_head(theirs, temperature=temperature, outputs=("log_probs", "entropy"))
    theirs.train()
    args = _Args()
    args.steps_per_generation = 2  # TRL's default: one generation batch per optimizer step
    trl = _bare(GRPOTrainer, theirs, temperature=temperature, top_entropy_quantile=1.0,
                off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta, loss_type=loss_type,
                epsilon_low=eps[0], epsilon_high=eps[1], use_vllm=False, _entropy_bonus_enabled=False,
                max_completion_length=MAX_TOKENS, current_gradient_accumulation_steps=2, args=args)
    ours_total, trl_total = 0.0, 0.0
    for h in halves:
        rows = _rows(prompts[h], completions[h], PAD)
        logp = completion_logps(mine, rows, temperature)
        with torch.no_grad():
            ref_logp = completion_logps(ref, rows, temperature)
        old = logp.detach() + torch.randn(logp.shape, generator=gen) * 0.3 * (logp != 0)
        terms = grpo_loss(logp, old, ref_logp, adv[h], rows["labels"] != -100, beta, eps, loss_type, MAX_TOKENS,
                          step_tokens)
        share = loss_sum(terms.loss, loss_type, 2, 4) / 4  # the trainer divides by the step's 4 prompts
        share.backward()
        ours_total += share.detach()
        inputs = {**_trl_inputs(prompts[h], completions[h]), "advantages": adv[h],
                  "old_per_token_logps": _to_trl_layout(old, completions[h]),
                  "ref_per_token_logps": _to_trl_layout(ref_logp, completions[h]),
                  "num_items_in_batch": torch.tensor(step_tokens)}
        loss = trl._compute_loss(theirs, inputs)
        loss.backward()
        trl_total += loss.detach()
    torch.testing.assert_close(ours_total, trl_total, **TOL)
    grads = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    compared = 0
    for name, p in mine.named_parameters():
        if p.grad is not None and name in grads:
            torch.testing.assert_close(p.grad, grads[name], **TOL)
            compared += 1
    assert compared == len(grads) > 10 and any(g.abs().sum() > 0 for g in grads.values())


def test_group_advantages_match_trls_formula():
    """Group-normalised as TRL: (r - mean_group) / (nanstd_group + 1e-4); an unscorable completion
    (every function None) is out of the baseline and gets advantage 0."""
    from trl.trainer.utils import nanstd

    per_func = torch.tensor([[1.0, 0.0], [0.0, 0.0], [float("nan"), float("nan")], [0.5, 1.0], [0.5, 1.0], [1.0, 1.0]])
    out = group_advantages(per_func, torch.tensor([1.0, 2.0]), group=3)
    totals = torch.tensor([1.0, 0.0, float("nan"), 2.5, 2.5, 3.0])
    grouped = totals.view(2, 3)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(3)
    std = nanstd(grouped, dim=1).repeat_interleave(3)
    expected = torch.nan_to_num((totals - mean) / (std + 1e-4), nan=0.0)
    torch.testing.assert_close(out.advantages, expected, **TOL)
    assert out.advantages[2] == 0.0
