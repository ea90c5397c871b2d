"""The GRPO objective as TRL's GRPOTrainer computes it (trl 1.x, `_compute_loss`), plain functions.

For N = B·G completions (G per prompt), per-token log-probs (N, T) under the policy (logp),
the policy that sampled them (old; equal values, no grad, when each batch is used once),
the reference (ref, adapter disabled) and a completion mask m (N, T):

    r_i   = sum_k w_k r_ik                                   rewards of N completions, F functions
    A_i   = (r_i - mean_group(r)) / (std_group(r) + 1e-4)    std of the group, the batch, or none
    rho   = exp(logp - old)                                  per token
    l     = -min(rho A, clip(rho, 1 - eps_lo, 1 + eps_hi) A) + beta (exp(ref - logp) - (ref - logp) - 1)
    grpo: mean_i (sum_t m l / sum_t m)    bnpo, dapo: sum m l / sum m    dr_grpo: sum m l / (N max_tokens)

dapo divides by the completion tokens of the whole optimizer step (every micro-batch of it, on
every process: TRL's num_items_in_batch), so the step's loss is one token mean however it is split;
the other types are means per micro-batch, averaged over the step's micro-batches as TRL does.
"""

from __future__ import annotations

import dataclasses

import torch

EPS = 1e-4  # TRL's: std + 1e-4


@dataclasses.dataclass
class Advantages:
    """Per-completion totals and advantages, (N,) each, plus the group std (for logging)."""

    rewards: torch.Tensor
    advantages: torch.Tensor
    std: torch.Tensor


@dataclasses.dataclass
class GRPOTerms:
    """The loss and what TRL logs about it."""

    loss: torch.Tensor  # scalar
    kl: torch.Tensor | None  # masked mean per-token KL (beta > 0)
    clip_low: torch.Tensor  # share of tokens clipped below (A < 0)
    clip_high: torch.Tensor  # ... above (A > 0)


def group_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, group: int, scale: str = "group"
                     ) -> Advantages:
    """(N, F) rewards (NaN = unscorable) -> weighted totals and group-normalised advantages (N,)."""
    rewards = weighted_rewards(rewards_per_func, weights)
    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group)
    if scale == "batch":
        std = _nanstd(rewards).expand_as(rewards)
    else:
        std = _nanstd(grouped, dim=1).repeat_interleave(group)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + EPS)
    return Advantages(rewards, torch.nan_to_num(advantages, nan=0.0), std)


def weighted_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, F) rewards -> (N,) weighted totals (training's `reward`); NaN where every function was unscorable."""
    rewards = (rewards_per_func * weights.to(rewards_per_func).unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # unscorable: out of the baseline
    return rewards


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Bessel-corrected std ignoring NaN (trl.trainer.utils.nanstd)."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    count = torch.sum(~torch.isnan(x), dim=dim)
    return torch.sqrt(var * count / (count - 1))


def grpo_loss(logp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, clip: tuple[float, float], loss_type: str = "dapo",
              max_tokens: int = 0, step_tokens: float | None = None) -> GRPOTerms:
    """The clipped-ratio loss with optional KL; shapes (N, T) but advantages (N,). `step_tokens` (dapo):
    completion tokens of the whole step, so the loss is this batch's share of it; None = this batch's."""
    adv = advantages.unsqueeze(1)  # (N, 1)
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - clip[0], 1 + clip[1])
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, T)
    kl = None
    if beta != 0.0:
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token = per_token + beta * kl
    loss = _reduce(per_token, mask, loss_type, max_tokens, step_tokens)
    tokens = mask.sum().clamp(min=1.0)
    low = ((ratio < 1 - clip[0]) & (adv < 0)).to(mask.dtype)
    high = ((ratio > 1 + clip[1]) & (adv > 0)).to(mask.dtype)
    return GRPOTerms(loss, None if kl is None else (kl * mask).sum() / tokens,
                     (low * mask).sum() / tokens, (high * mask).sum() / tokens)


def loss_sum(loss: torch.Tensor, loss_type: str, prompts: int, step_prompts: float) -> torch.Tensor:
    """What the objective hands the trainer, which divides by the step's prompts (train/trainer.py):
    dapo's loss is already this micro-batch's share of the step, the others are its means."""
    return loss * (step_prompts if loss_type == "dapo" else prompts)


def _reduce(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_tokens: int,
            step_tokens: float | None) -> torch.Tensor:
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo" or (loss_type == "dapo" and step_tokens is None):
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dapo":
        return (per_token * mask).sum() / max(float(step_tokens), 1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.size(0) * max_tokens)
    raise ValueError(f"unknown GRPO loss_type '{loss_type}'")
