"""The training loss, computing output-layer logits only where a label exists.

A causal LM's head maps every position's hidden state to the vocabulary. In chat SFT
most positions (system, user turns, padding) carry no loss, and in Gemma 3 270M the
head (262k x 640, tied to the embeddings) is over 60% of the parameters. So we run the
decoder body, keep the hidden states whose label is not -100, and apply the head to
those rows only:

    hidden (B, T, H) --select labels != -100--> (N, H) --lm_head--> (N, V) --> CE sum
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class SelectedLogitsLoss(nn.Module):
    """Wraps a causal LM; forward returns (summed cross-entropy, number of label tokens).

    Labels are already shifted (position t holds the target for token t+1), so packed
    examples never predict across their boundary. This module is what accelerate
    wraps for DDP/FSDP, so gradient sync sees one forward call.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lm = causal_lm(self.model)
        out = lm.get_decoder()(
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
        )
        keep = labels != IGNORE  # (B, T)
        hidden = out.last_hidden_state[keep]  # (N, H)
        logits = head_logits(lm, hidden)  # (N, V)
        loss_sum = F.cross_entropy(logits, labels[keep], reduction="sum")
        return loss_sum, keep.sum()


def head_logits(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head on selected hidden states, with Gemma's final logit soft-capping if configured."""
    logits = lm.get_output_embeddings()(hidden).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
