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

    def __init__(self, model: nn.Module, stage: str, cfg) -> None:
        super().__init__()
        self.model, self.stage, self.cfg = model, stage, cfg
        self.stats = dict.fromkeys(_STAT_KEYS, 0.0)

    def forward(self, input_ids, labels, position_ids, ref_logps=None, desirable=None, kl_input_ids=None,
                kl_labels=None, kl_position_ids=None, kl_ref_logps=None) -> tuple[torch.Tensor, int]:
        lm = causal_lm(self.model)
        logps, lens = sequence_logps(lm, input_ids, labels, position_ids)
        if self.stage in REFERENCE_STAGES and ref_logps is None:
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
        """The configured beta, or the stage's usual one (SimPO 2.0, others 0.1)."""
        return self.cfg.beta if self.cfg.beta is not None else (2.0 if self.stage == "simpo" else 0.1)

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
        ref = ref if ref is not None else self.reference_logps(ids, labels, positions)
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

    stats = getattr(accelerator.unwrap_model(module), "stats", None)
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
