"""GRPOConfig: the knobs of stage=grpo, named as TRL's GRPOConfig names them where they exist.

Sampling is the engine's one `SamplingParams` (grpo.sampling.*): `n` is the group size
(TRL's num_generations), `max_tokens` the longest completion (max_completion_length).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunelab.config import opt
from tunelab.engine.config import SamplingParams

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
_NOT_FOR_ROLLOUTS = ("logprobs", "prompt_logprobs", "structured_outputs", "seed")


@dataclasses.dataclass
class GRPOConfig:
    """Group Relative Policy Optimisation: rewards from Python functions, rollouts on tunelab's engine."""

    reward_funcs: list[str] = opt([], "reward functions: built-ins (format, accuracy, length) or "
                                      "'module:function' / 'path/to/file.py:function'")
    reward_weights: list[float] = opt([], "weight per reward function (empty = all 1.0)")
    sampling: SamplingParams = opt(SamplingParams(n=4, max_tokens=64, temperature=1.0),
                                   "rollout sampling (one SamplingParams): n = group size, max_tokens = longest "
                                   "completion, temperature, top_p, top_k, min_p, repetition_penalty, stop")
    beta: float = opt(0.0, "KL coefficient to the reference (the base, adapter disabled; full/freeze: a copy of "
                           "the trained tensors' starting values); 0 = no KL (TRL's default)")
    epsilon: float = opt(0.2, "lower clip range of the probability ratio")
    epsilon_high: float | None = opt(None, "upper clip range; empty = epsilon (DAPO suggests 0.28)")
    loss_type: LossType = opt("dapo", "grpo (per-sequence mean), bnpo (per-token mean), dr_grpo (/ max_tokens), "
                                      "dapo (per-token mean over the step; TRL's default)")
    scale_rewards: Literal["group", "batch", "none"] = opt("group", "divide advantages by the group's reward std, "
                                                                    "the batch's, or not at all (Dr. GRPO)")
    engine_blocks: int = opt(0, "KV-cache blocks of the rollout engine (0 = sized for one step's rollouts)")

    def __post_init__(self) -> None:
        if self.sampling.n < 2:
            raise ValueError(f"grpo.sampling.n must be >= 2 (a group needs two completions), got {self.sampling.n}")
        if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            raise ValueError("grpo.epsilon and grpo.epsilon_high must be > 0")
        if self.beta < 0:
            raise ValueError(f"grpo.beta must be >= 0, got {self.beta}")
        for name in _NOT_FOR_ROLLOUTS:
            if getattr(self.sampling, name) not in (None, 0):
                raise ValueError(f"grpo.sampling.{name}: not used for rollouts (the trainer seeds each step from "
                                 "`seed` and scores the tokens itself); remove it")
        if self.reward_weights and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"grpo.reward_weights has {len(self.reward_weights)} entries for "
                             f"{len(self.reward_funcs)} reward_funcs")

    @property
    def group_size(self) -> int:
        """Completions per prompt (TRL's num_generations)."""
        return self.sampling.n

    @property
    def clip(self) -> tuple[float, float]:
        """(epsilon_low, epsilon_high)."""
        return self.epsilon, self.epsilon if self.epsilon_high is None else self.epsilon_high

    def weights(self) -> list[float]:
        """One weight per reward function."""
        return list(self.reward_weights) or [1.0] * len(self.reward_funcs)

    def check_stage(self) -> None:
        """What stage=grpo needs from the rest of the config, before anything loads."""
        if not self.reward_funcs:
            raise ValueError("stage=grpo needs grpo.reward_funcs (e.g. [format, accuracy], or 'my_module:my_reward')")
