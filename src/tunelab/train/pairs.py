"""The preference objective of the one trainer: batches of pairs in, one loss out.

A micro-batch of B pairs is one forward pass over 2B rows, chosen first, each right-padded
prompt + completion; the output layer runs only at completion positions (loss.head_logprobs):

    rows (2B, T) --decoder--> hidden (2B, T, H) --labels != -100--> (N, H) --head--> logp (N,)
    --sum per row--> pi (2B,) = [pi_chosen (B,), pi_rejected (B,)]

The reference log-probs come from the same weights with the LoRA adapter disabled (no second
copy), without grad, or from values precomputed once before training (full fine-tuning).
KTO rows are single completions plus mismatched (prompt_i, completion_i+1) rows for its KL
reference point. The losses themselves are plain functions in train/preference.py.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from tunelab.data.tokenize import IGNORE, PreferenceExample
from tunelab.train import preference as pl
from tunelab.train.config import PreferenceConfig
from tunelab.train.loss import causal_lm, head_logprobs

REFERENCE_STAGES = ("dpo", "kto")
_STAT_KEYS = ("chosen_sum", "chosen_n", "rejected_sum", "rejected_n", "correct", "pairs", "kl_sum", "kl_n")


def sequence_logps(lm: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob sum, label count) per row, (R,) each; labels are shifted and -100 off the completion."""
    out = lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    keep = labels != IGNORE  # (R, T)
    logp = head_logprobs(lm, out.last_hidden_state[keep], labels[keep])  # (N,)
    rows = keep.nonzero()[:, 0]
    sums = torch.zeros(input_ids.shape[0], dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)
    return sums, keep.sum(dim=1)


def _rows(prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int) -> dict:
    """input_ids, shifted labels (completion only) and position ids, right-padded: (R, T) each."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    width = max(map(len, seqs))
    labels = [[IGNORE] * (len(p) - 1) + c + [IGNORE] * (width - len(p) - len(c) + 1) for p, c in zip(prompts, completions)]
    return {"input_ids": torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs]),
            "labels": torch.tensor(labels), "position_ids": torch.tensor([list(range(width))] * len(seqs))}


def collate_preference(indices: Sequence[int], examples: Sequence[PreferenceExample], pad_id: int) -> dict:
    """Tensors for one micro-batch: pairs as [chosen..., rejected...] rows; KTO rows plus their KL rows."""
    items = [examples[i] for i in indices]
    sides = len(items[0].completions)
    prompts = [ex.prompt_ids for _ in range(sides) for ex in items]
    batch = _rows(prompts, [ex.completions[k] for k in range(sides) for ex in items], pad_id)
    if items[0].label is not None:  # KTO: the next example's completion after this prompt
        other = [examples[(i + 1) % len(examples)].completions[0] for i in indices]
        batch.update({f"kl_{k}": v for k, v in _rows(prompts, other, pad_id).items()})
        batch["desirable"] = torch.tensor([bool(ex.label) for ex in items])
    if all(ex.ref_logps is not None for ex in items):
        ref = [ex.ref_logps for ex in items]
        batch["ref_logps"] = torch.tensor([r[k] for k in range(sides) for r in ref], dtype=torch.float32)
        if items[0].label is not None:
            batch["kl_ref_logps"] = torch.tensor([r[-1] for r in ref], dtype=torch.float32)
    return batch


class PreferenceObjective(nn.Module):
    """Wraps the (PEFT) model like SelectedLogitsLoss; forward returns (loss sum, examples).

    Reward, margin and accuracy sums collect in `stats` until `take_stats` reads them.
    """

    def __init__(self, model: nn.Module, stage: str, cfg: PreferenceConfig) -> None:
        super().__init__()
        self.model, self.stage, self.cfg = model, stage, cfg
        self.precomputed = False  # reference log-probs come with the batch (precompute_reference)
        self.stats = dict.fromkeys(_STAT_KEYS, 0.0)

    def forward(self, input_ids, labels, position_ids, ref_logps=None, desirable=None, kl_input_ids=None,
                kl_labels=None, kl_position_ids=None, kl_ref_logps=None) -> tuple[torch.Tensor, int]:
        lm = causal_lm(self.model)
        logps, lens = sequence_logps(lm, input_ids, labels, position_ids)
        if self.stage in REFERENCE_STAGES and not self.precomputed:
            ref_logps = self.reference_logps(input_ids, labels, position_ids)
        if self.stage == "kto":
            kl = self._kto_kl(kl_input_ids, kl_labels, kl_position_ids, kl_ref_logps)
            terms = pl.kto_loss(logps, ref_logps, desirable, kl, self.beta, self.cfg.desirable_weight,
                                self.cfg.undesirable_weight)
            self._add(kl_sum=float(kl), kl_n=1)
        else:
            terms = self._pair_loss(logps, lens.to(logps.dtype), ref_logps)
        self._record(terms)
        return terms.losses.sum(), len(terms.losses)

    @property
    def beta(self) -> float:
        """The configured beta, or the stage's usual one."""
        return self.cfg.beta_for(self.stage)

    def _pair_loss(self, logps: torch.Tensor, lens: torch.Tensor, ref: torch.Tensor | None) -> pl.LossTerms:
        (pc, pr), (lc, lr) = logps.chunk(2), lens.chunk(2)
        if self.stage == "dpo":
            rc, rr = ref.chunk(2)
            return pl.dpo_loss(pc, pr, rc, rr, self.beta, self.cfg.loss, self.cfg.label_smoothing, lc, lr)
        if self.stage == "orpo":
            return pl.orpo_loss(pc, pr, lc, lr, self.beta)
        return pl.simpo_loss(pc, pr, lc, lr, self.beta, self.cfg.simpo_gamma, self.cfg.label_smoothing)

    @torch.no_grad()
    def reference_logps(self, input_ids, labels, position_ids) -> torch.Tensor:
        """Log-prob sums under the reference: the base model, adapter disabled."""
        with reference_weights(self.model):
            return sequence_logps(causal_lm(self.model), input_ids, labels, position_ids)[0]

    @torch.no_grad()
    def _kto_kl(self, ids, labels, positions, ref) -> torch.Tensor:
        policy = sequence_logps(causal_lm(self.model), ids, labels, positions)[0]
        ref = ref if self.precomputed else self.reference_logps(ids, labels, positions)
        return pl.kto_kl(policy, ref)

    def _record(self, terms: pl.LossTerms) -> None:
        c, r = terms.chosen_rewards, terms.rejected_rewards
        self._add(chosen_sum=float(c.sum()), chosen_n=len(c), rejected_sum=float(r.sum()), rejected_n=len(r))
        if self.stage != "kto":
            self._add(correct=float((c > r).sum()), pairs=len(c))

    def _add(self, **values: float) -> None:
        for key, value in values.items():
            self.stats[key] += value


@contextlib.contextmanager
def reference_weights(model: nn.Module) -> Iterator[None]:
    """The reference model: the PEFT model with its adapter disabled."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise RuntimeError("no reference: the model has no adapter to disable; precompute reference log-probs")
    with disable():
        yield


def take_stats(module: nn.Module, accelerator) -> dict[str, float]:
    """rewards/chosen, rewards/rejected, margin, accuracy (and kl) since the last call, over all processes."""
    from tunelab.train import distributed as dist

    objective = accelerator.unwrap_model(module)
    if hasattr(objective, "take_metrics"):  # GRPO: rewards per function, lengths, clipping (train/grpo.py)
        return objective.take_metrics(accelerator)
    stats = getattr(objective, "stats", None)
    if stats is None:  # SFT
        return {}
    sums = dict(zip(_STAT_KEYS, dist.all_sum(accelerator, [stats[k] for k in _STAT_KEYS])))
    stats.update(dict.fromkeys(_STAT_KEYS, 0.0))
    out = {}
    if sums["chosen_n"]:
        out["rewards/chosen"] = sums["chosen_sum"] / sums["chosen_n"]
    if sums["rejected_n"]:
        out["rewards/rejected"] = sums["rejected_sum"] / sums["rejected_n"]
    if len(out) == 2:
        out["margin"] = out["rewards/chosen"] - out["rewards/rejected"]
    if sums["pairs"]:
        out["accuracy"] = sums["correct"] / sums["pairs"]
    if sums["kl_n"]:
        out["kl"] = sums["kl_sum"] / sums["kl_n"]
    return out


@torch.no_grad()
def precompute_reference(module: nn.Module, example_lists: Sequence[list], accelerator, pad_id: int,
                         batch_size: int) -> None:
    """Store reference log-probs in each example once, before training, when there is no adapter
    to disable (full/freeze): the starting weights are the reference. A no-op otherwise."""
    objective = accelerator.unwrap_model(module)
    if not isinstance(objective, PreferenceObjective) or objective.stage not in REFERENCE_STAGES:
        return
    if getattr(objective.model, "disable_adapter", None) is not None:
        return  # LoRA family: the reference is computed per batch with the adapter off
    lm = causal_lm(objective.model)
    objective.eval()  # the reference as it will be scored: no dropout
    for examples in example_lists:
        for start in range(0, len(examples), batch_size):
            idx = range(start, min(start + batch_size, len(examples)))
            batch = {k: t.to(accelerator.device) for k, t in collate_preference(idx, examples, pad_id).items()}
            logps = sequence_logps(lm, batch["input_ids"], batch["labels"], batch["position_ids"])[0]
            per_side = logps.view(-1, len(idx)).t().tolist()  # (B, sides)
            if "kl_input_ids" in batch:
                kl = sequence_logps(lm, batch["kl_input_ids"], batch["kl_labels"], batch["kl_position_ids"])[0]
                per_side = [row + [k] for row, k in zip(per_side, kl.tolist())]
            for i, values in zip(idx, per_side):
                examples[i].ref_logps = values
    objective.precomputed = True
    objective.train()


@torch.no_grad()
def preference_accuracy(model: nn.Module, examples: Sequence[PreferenceExample], pad_id: int = 0,
                        batch_size: int = 8) -> float:
    """Share of pairs whose chosen reply has the higher mean log-prob per token under `model`:
    the model's own preference, defined for any model (base, SFT, DPO), unlike the implicit reward."""
    lm, wins = causal_lm(model), 0
    for start in range(0, len(examples), batch_size):
        idx = range(start, min(start + batch_size, len(examples)))
        batch = collate_preference(idx, examples, pad_id)
        logps, lens = sequence_logps(lm, batch["input_ids"], batch["labels"], batch["position_ids"])
        (pc, pr), (lc, lr) = logps.chunk(2), lens.chunk(2)
        wins += int((pc / lc.clamp(min=1) > pr / lr.clamp(min=1)).sum())
    return wins / max(len(examples), 1)
