"""stage=rm: a reward model, the decoder plus a scalar head, trained on pairs (Bradley-Terry).

The model is the base loaded as *ForSequenceClassification with one label, so its `score`
head (hidden -> 1) is new; under LoRA peft trains the adapter and saves the head with it
(task SEQ_CLS, modules_to_save=score). Batches are the pair batches of train/pairs.py; the
score of a row is the head applied to its last real token:

    rows (2B, T) --decoder--> hidden (2B, T, H) --last token--> (2B, H) --score--> s (2B,)
    loss = -log sigma(s_chosen - s_rejected)
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.data.tokenize import IGNORE
from tunelab.train import preference as pl
from tunelab.train.loss import causal_lm
from tunelab.train.pairs import PreferenceObjective


def reward_scores(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor
                  ) -> torch.Tensor:
    """Scalar reward per row (R,): the score head at the row's last real token (right padding)."""
    lm = causal_lm(model)  # the *ForSequenceClassification under the PEFT wrapper
    decoder = getattr(lm, lm.base_model_prefix)
    hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    positions = torch.arange(labels.shape[1], device=labels.device)
    # the last label sits one before the last real token: labels are shifted
    last = ((labels != IGNORE) * positions).argmax(dim=1) + 1  # (R,)
    return lm.score(hidden[torch.arange(len(last), device=last.device), last]).squeeze(-1).float()


class RewardObjective(PreferenceObjective):
    """Bradley-Terry on pair batches; logs the scores as rewards/chosen and rewards/rejected."""

    def forward(self, input_ids, labels, position_ids, **_) -> tuple[torch.Tensor, int]:
        scores = reward_scores(self.model, input_ids, labels, position_ids)
        terms = pl.bradley_terry_loss(*scores.chunk(2))
        self._record(terms)
        return terms.losses.sum(), len(terms.losses)


def load_reward_model(model_dir, **kwargs) -> nn.Module:
    """A base (new head) or a saved reward model as *ForSequenceClassification with one label; the
    pad id is set so HF pipelines can find each row's last real token."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_run_reward_model(run, dtype: torch.dtype) -> nn.Module:
    """A finished stage=rm run's reward model: its full model/, or the base with the SEQ_CLS adapter
    (which carries the trained score head)."""
    if run.model_dir is not None:
        return load_reward_model(run.model_dir, dtype=dtype)
    from peft import PeftModel

    from tunelab.compat import quiet_peft_warnings

    model = load_reward_model(run.base_model, dtype=dtype)
    with quiet_peft_warnings():
        return PeftModel.from_pretrained(model, str(run.adapter_dir))


def reward_head(model: nn.Module) -> nn.Module:
    """The scalar head of a reward model (to keep it trainable under method=freeze)."""
    return causal_lm(model).score
