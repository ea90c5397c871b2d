"""The GRPO objective as TRL's GRPOTrainer computes it (trl 1.x, `_compute_loss`), plain functions.

For N = B·G completions (G per prompt), per-token log-probs (N, T) under the policy (logp),
the policy that sampled them (old; equal values, no grad, when each batch is used once),
the reference (ref, adapter disabled) and a completion mask m (N, T):

    r_i   = sum_k w_k r_ik                                   rewards of N completions, F functions
    A_i   = (r_i - mean_group(r)) / (std_group(r) + 1e-4)    std of the group, the batch, or none
    rho   = exp(logp - old)                                  per token
    l     = -min(rho A, clip(rho, 1 - eps_lo, 1 + eps_hi) A) + beta (exp(ref - logp) - (ref - logp) - 1)
    grpo: mean_i (sum_t m l / sum_t m)    bnpo, dapo: sum m l / sum m    dr_grpo: sum m l / (N max_tokens)

dapo normalises by the tokens of the whole step in TRL; here each micro-batch is normalised by
its own tokens, the same as TRL when grad_accum = 1.
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
              max_tokens: int = 0) -> GRPOTerms:
    """The clipped-ratio loss with optional KL; shapes (N, T) but advantages (N,)."""
    adv = advantages.unsqueeze(1)  # (N, 1)
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - clip[0], 1 + clip[1])
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, T)
    kl = None
    if beta != 0.0:
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token = per_token + beta * kl
    loss = _reduce(per_token, mask, loss_type, max_tokens)
    tokens = mask.sum().clamp(min=1.0)
    low = ((ratio < 1 - clip[0]) & (adv < 0)).to(mask.dtype)
    high = ((ratio > 1 + clip[1]) & (adv > 0)).to(mask.dtype)
    return GRPOTerms(loss, None if kl is None else (kl * mask).sum() / tokens,
                     (low * mask).sum() / tokens, (high * mask).sum() / tokens)


def _reduce(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_tokens: int) -> torch.Tensor:
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.size(0) * max_tokens)
    raise ValueError(f"unknown GRPO loss_type '{loss_type}'")
