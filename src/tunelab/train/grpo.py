"""stage=grpo: the objective the one trainer steps, rollouts included.

An optimizer step names B prompts per micro-batch (their `key`s). Before its first micro-batch,
the whole step is rolled out at once (as TRL generates a generation batch):

    sync the policy into the engine -> G completions per prompt of the step (train/rollout.py)
    -> rewards (N = B·G per micro-batch, F functions; train/reward_funcs.py) -> group advantages

and each micro-batch's forward pass takes its share:

    rows prompt + completion (N, T) --decoder--> hidden at completion tokens --head/T--> logp
    -> clipped-ratio loss with optional KL to the reference (adapter disabled; train/grpo_loss.py;
       full/freeze: the starting weights, train/grpo_reference.py)

Each batch is used once (TRL's num_iterations = 1), so the sampling policy's log-probs equal the
policy's own, detached. The forward returns (loss sum, B): the trainer divides by the step's
prompts; dapo divides by the step's completion tokens, over processes (grpo_loss.loss_sum).
A forward without a prepared step (evaluation) rolls out its own micro-batch.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any, Sequence

import torch
from torch import nn

from tunelab.data.prompts import PromptExample
from tunelab.data.tokenize import IGNORE
from tunelab.train.grpo_config import GRPOConfig
from tunelab.train.grpo_loss import Advantages, GRPOTerms, group_advantages, grpo_loss, loss_sum
from tunelab.train.loss import causal_lm, head_logprobs
from tunelab.train.pairs import _rows, reference_weights
from tunelab.train.reward_funcs import RewardFunction, score_completions
from tunelab.train.rollout import Completions, Rollout


def collate_prompts(indices: Sequence[int], examples: Sequence[PromptExample]) -> dict:
    """A GRPO micro-batch is the keys of its prompts; rollouts happen in the forward pass."""
    return {"prompt_keys": torch.tensor([examples[i].key for i in indices])}


def completion_logps(lm: nn.Module, batch: dict, temperature: float) -> torch.Tensor:
    """log p(token) of every completion token under logits / temperature, (R, T), 0 off the labels."""
    out = lm.get_decoder()(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    keep = batch["labels"] != IGNORE  # (R, T)
    hidden = out.last_hidden_state[keep]  # (N, H)
    if temperature != 1.0:
        if getattr(lm.config, "final_logit_softcapping", None):
            raise ValueError("grpo: temperature != 1 with final_logit_softcapping is not supported")
        hidden = hidden / temperature  # logits are linear in hidden: W (h / T) = logits / T
    logp = head_logprobs(lm, hidden, batch["labels"][keep])
    return torch.zeros(keep.shape, dtype=logp.dtype, device=logp.device).masked_scatter(keep, logp)


@dataclasses.dataclass
class GRPOStats:
    """Sums since the last `take`: per reward function, total reward, KL, clipping, lengths."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, **values: float) -> None:
        for key, value in values.items():
            number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.sums[key] = self.sums.get(key, 0.0) + number


@dataclasses.dataclass
class Rollouts:
    """One micro-batch's completions, scored, with the totals of its step over all processes."""

    items: list[PromptExample]
    done: Completions
    advantages: torch.Tensor  # (B·G,)
    step_prompts: float
    step_tokens: float | None  # None: normalise by this micro-batch's own tokens


class GRPOObjective(nn.Module):
    """Wraps the PEFT model like SelectedLogitsLoss; forward(prompt_keys) -> (loss sum, B)."""

    def __init__(self, model: nn.Module, cfg: GRPOConfig, funcs: list[RewardFunction], examples: Sequence,
                 rollout: Rollout):
        super().__init__()
        self.model, self.cfg, self.funcs, self.rollout = model, cfg, funcs, rollout
        self.examples = {ex.key: ex for ex in examples}
        self.weights = torch.tensor(cfg.weights(), dtype=torch.float32)
        self.stats = GRPOStats()
        self.pending: deque[Rollouts] = deque()  # the prepared step's micro-batches, in order
        self.start = None  # full/freeze with beta > 0: the reference is the trained tensors' starting values
        if cfg.beta != 0.0 and not hasattr(model, "peft_config"):
            from tunelab.train.grpo_reference import StartingWeights

            self.start = StartingWeights(model)

    def start_step(self, micro_batches: Sequence[Sequence[PromptExample]], accelerator: Any) -> None:
        """Roll out and score every micro-batch of the coming optimizer step in one generation."""
        from tunelab.train import distributed as dist

        items = [ex for mb in micro_batches for ex in mb]
        done, adv = self._roll_out(items)
        tokens = sum(len(ids) for ids in done.token_ids)
        prompts, tokens = dist.all_sum(accelerator, [len(items), tokens])  # TRL's num_items_in_batch
        G, at = self.cfg.group_size, 0
        self.pending.clear()
        for mb in micro_batches:
            rows = slice(at * G, (at + len(mb)) * G)
            self.pending.append(Rollouts(list(mb), done.select(rows), adv.advantages[rows], prompts, tokens))
            at += len(mb)

    def forward(self, prompt_keys: torch.Tensor) -> tuple[torch.Tensor, int]:
        keys = [int(k) for k in prompt_keys]
        if self.pending:
            part = self.pending.popleft()
            if [ex.key for ex in part.items] != keys:
                raise RuntimeError(f"grpo: micro-batch {keys} is not the prepared step's next one")
        else:  # evaluation: this micro-batch alone
            items = [self.examples[k] for k in keys]
            done, adv = self._roll_out(items)
            part = Rollouts(items, done, adv.advantages, len(items), None)
        G = self.cfg.group_size
        device = prompt_keys.device
        batch = {k: t.to(device) for k, t in _rows([ex.prompt_ids for ex in part.items for _ in range(G)],
                                                     [ids or [] for ids in part.done.token_ids], 0).items()}
        terms = self.loss(batch, part.advantages.to(device), part.step_tokens)
        self.stats.add(clip_low=terms.clip_low, clip_high=terms.clip_high, batches=1,
                       kl=0.0 if terms.kl is None else terms.kl)
        return loss_sum(terms.loss, self.cfg.loss_type, len(keys), part.step_prompts), len(keys)

    def _roll_out(self, items: Sequence[PromptExample]) -> tuple[Completions, Advantages]:
        """G completions per prompt from the current policy, scored, with group advantages."""
        self.rollout.sync(self.model)
        seed = int(torch.randint(0, 2**31 - 1, (1,)))  # from the global RNG, which checkpoints restore
        done = self.rollout.generate([ex.prompt_ids for ex in items], seed)
        per_func = self.score(items, done)  # (N, F)
        adv = group_advantages(per_func, self.weights, self.cfg.group_size, self.cfg.scale_rewards)
        self._record(per_func, adv, done)
        return done, adv

    def score(self, items: Sequence[PromptExample], done: Completions) -> torch.Tensor:
        """Rewards (N, F) of the completions, each function checked (reward_funcs.RewardFunction)."""
        out = score_completions(self.funcs, items, done.texts, done.token_ids, self.cfg.group_size)
        return torch.tensor(out, dtype=torch.float32).t().reshape(len(done.texts), len(self.funcs))

    def loss(self, batch: dict, advantages: torch.Tensor, step_tokens: float | None = None) -> GRPOTerms:
        """The GRPO loss of completions `batch` (rows from train/pairs._rows) with these advantages."""
        lm, temp = causal_lm(self.model), self.cfg.sampling.temperature or 1.0
        logp = completion_logps(lm, batch, temp)
        ref = None
        if self.cfg.beta != 0.0:
            with torch.no_grad(), (self.start.swapped_in() if self.start else reference_weights(self.model)):
                ref = completion_logps(causal_lm(self.model), batch, temp)
        mask = batch["labels"] != IGNORE
        return grpo_loss(logp, logp.detach(), ref, advantages, mask, self.cfg.beta, self.cfg.clip,
                         self.cfg.loss_type, self.cfg.sampling.max_tokens, step_tokens)

    def _record(self, per_func: torch.Tensor, adv: Advantages, done: Completions) -> None:
        lengths = torch.tensor([float(len(ids)) for ids in done.token_ids])
        G = self.cfg.group_size
        for k, f in enumerate(self.funcs):
            column = per_func[:, k]
            seen = ~torch.isnan(column)
            self.stats.add(**{f"rewards/{f.label}/sum": column[seen].sum(), f"rewards/{f.label}/n": seen.sum(),
                              f"rewards/{f.label}/sq": (column[seen] ** 2).sum()})
        seen = ~torch.isnan(adv.rewards)
        group_std = adv.std.view(-1, G)[:, 0]
        self.stats.add(reward_sum=adv.rewards[seen].sum(), reward_n=seen.sum(),
                       std_sum=torch.nan_to_num(group_std).sum(), groups=len(group_std),
                       zero_std=torch.isclose(group_std, torch.zeros_like(group_std)).sum(),
                       len_sum=lengths.sum(), completions=len(lengths), truncated=sum(done.truncated))

    def take_metrics(self, accelerator: Any) -> dict[str, float]:
        """metrics.jsonl fields since the last call (TRL's names), summed over processes."""
        from tunelab.train import distributed as dist

        keys = sorted(self.stats.sums)
        if not keys:
            return {}
        s = dict(zip(keys, dist.all_sum(accelerator, [self.stats.sums[k] for k in keys])))
        self.stats = GRPOStats()
        return grpo_metrics(s, [f.label for f in self.funcs], self.cfg.beta != 0.0)


def grpo_metrics(s: dict[str, float], names: list[str], with_kl: bool) -> dict[str, float]:
    """Means and stds from the summed stats."""
    out: dict[str, float] = {}
    for name in names:
        n = max(s[f"rewards/{name}/n"], 1.0)
        mean = s[f"rewards/{name}/sum"] / n
        out[f"rewards/{name}/mean"] = mean
        out[f"rewards/{name}/std"] = max(s[f"rewards/{name}/sq"] / n - mean * mean, 0.0) ** 0.5
    out["reward"] = s["reward_sum"] / max(s["reward_n"], 1.0)
    out["reward_std"] = s["std_sum"] / max(s["groups"], 1.0)
    out["frac_reward_zero_std"] = s["zero_std"] / max(s["groups"], 1.0)
    out["completions/mean_length"] = s["len_sum"] / max(s["completions"], 1.0)
    out["completions/clipped_ratio"] = s["truncated"] / max(s["completions"], 1.0)
    out["clip_ratio/low_mean"] = s["clip_low"] / max(s["batches"], 1.0)
    out["clip_ratio/high_mean"] = s["clip_high"] / max(s["batches"], 1.0)
    if with_kl:
        out["kl"] = s["kl"] / max(s["batches"], 1.0)
    return out


def start_step(module: nn.Module, accelerator: Any, group: Sequence, examples: Sequence) -> None:
    """Before an optimizer step's micro-batches (`group`, train/packing.MicroBatch): GRPO rolls the
    whole step out first; other stages have nothing to do."""
    objective = accelerator.unwrap_model(module)
    if isinstance(objective, GRPOObjective):
        objective.start_step([[examples[i] for i in mb.indices] for mb in group], accelerator)
