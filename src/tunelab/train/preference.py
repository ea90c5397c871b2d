"""Preference losses as plain functions over per-sequence log-probabilities.

Every function takes log-prob sums of completions (policy, and reference where the loss
has one) as (B,) tensors and returns `LossTerms`: a loss per example plus the rewards
logged as rewards/chosen and rewards/rejected. Lengths are completion token counts,
used where the loss normalises per token. Notation: pi = policy log-prob sum,
ref = reference log-prob sum, |y| = completion tokens, sigma = the logistic function.

The maths follows TRL (DPOTrainer, KTOTrainer, ORPOTrainer, CPOTrainer with
loss_type=simpo, RewardTrainer); tests/unit/train/test_preference_parity.py compares
each one with TRL on the same batch.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

DPO_LOSSES = ("sigmoid", "ipo", "hinge")


@dataclasses.dataclass
class LossTerms:
    """Per-example losses (B,) and the rewards logged for the chosen and rejected sides."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _conservative_sigmoid(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1-eps) log sigma(x) - eps log sigma(-x): a preference label flipped with probability eps (cDPO)."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lens: torch.Tensor | None = None,
    rejected_lens: torch.Tensor | None = None,
) -> LossTerms:
    """DPO. With r_c = pi_c - ref_c, r_r = pi_r - ref_r and d = r_c - r_r:

    sigmoid: -(1-eps) log sigma(beta d) - eps log sigma(-beta d)   (eps = label_smoothing, cDPO)
    hinge:   max(0, 1 - beta d)
    ipo:     (r_c/|y_c| - r_r/|y_r| - 1/(2 beta))^2   (per-token log-ratios, as TRL does)
    rewards: beta r_c and beta r_r.
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = _conservative_sigmoid(beta * delta, label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lens is None or rejected_lens is None:
            raise ValueError("ipo normalises per token: pass chosen_lens and rejected_lens")
        per_token = chosen_ratio / chosen_lens.clamp(min=1) - rejected_ratio / rejected_lens.clamp(min=1)
        losses = (per_token - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss '{loss_type}'; use one of {', '.join(DPO_LOSSES)}")
    return LossTerms(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def kto_kl(kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 = max(0, mean(pi - ref)) over mismatched (prompt, completion) pairs, no grad."""
    return (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossTerms:
    """KTO on unpaired completions, with r = pi - ref and z0 = `kl` (see `kto_kl`):

    desirable:   w_d (1 - sigma(beta (r - z0)))
    undesirable: w_u (1 - sigma(beta (z0 - r)))
    Losses are ordered desirable first, then undesirable (as TRL concatenates them);
    chosen_rewards / rejected_rewards are beta r of the desirable / undesirable examples.
    """
    ratio = logps - ref_logps
    good, bad = ratio[desirable], ratio[~desirable]
    good_losses = desirable_weight * (1 - torch.sigmoid(beta * (good - kl)))
    bad_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl - bad)))
    return LossTerms(torch.cat([good_losses, bad_losses]), beta * good.detach(), beta * bad.detach())


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, switching formulas at -ln 2 to avoid cancellation."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lens: torch.Tensor,
    rejected_lens: torch.Tensor,
    beta: float = 0.1,
) -> LossTerms:
    """ORPO, no reference model. With per-token means a_c = pi_c/|y_c|, a_r = pi_r/|y_r|:

    log odds = (a_c - a_r) - (log(1 - e^a_c) - log(1 - e^a_r))
    loss     = -a_c - beta log sigma(log odds)      (SFT on the chosen reply + odds-ratio term)
    rewards: beta a_c and beta a_r.
    TRL's NLL term averages over all chosen tokens of the batch (prompt included); ours is
    the chosen reply's per-token mean, as in the paper's L_SFT.
    """
    avg_c = chosen_logps.float() / chosen_lens.clamp(min=1)
    avg_r = rejected_logps.float() / rejected_lens.clamp(min=1)
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    losses = -avg_c - beta * F.logsigmoid(log_odds)
    return LossTerms(losses, beta * avg_c.detach(), beta * avg_r.detach())


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lens: torch.Tensor,
    rejected_lens: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> LossTerms:
    """SimPO, no reference model: d = pi_c/|y_c| - pi_r/|y_r|,

    loss = -(1-eps) log sigma(beta d - gamma) - eps log sigma(gamma - beta d)
    rewards: beta pi_c/|y_c| and beta pi_r/|y_r|.
    """
    avg_c = chosen_logps / chosen_lens.clamp(min=1)
    avg_r = rejected_logps / rejected_lens.clamp(min=1)
    losses = _conservative_sigmoid(beta * (avg_c - avg_r) - gamma, label_smoothing)
    return LossTerms(losses, beta * avg_c.detach(), beta * avg_r.detach())


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float | None = None,
) -> LossTerms:
    """A reward model's pairwise loss on scalar rewards s_c, s_r (optional margin m):

    loss = -log sigma(s_c - s_r - m) + c (s_c + s_r)^2   (c = center_coef keeps rewards near 0)
    """
    diff = chosen_rewards - rejected_rewards - (margin if margin is not None else 0.0)
    losses = -F.logsigmoid(diff)
    if center_coef:
        losses = losses + center_coef * (chosen_rewards + rejected_rewards) ** 2
    return LossTerms(losses, chosen_rewards.detach(), rejected_rewards.detach())
