"""Token rows an adapter trained (peft's `trainable_token_indices`), served per request, never merged.

Training `lora.trainable_tokens` replaces rows I (k ids) of the input embedding with R (k, H);
with tied embeddings the output layer's rows are the same tensor. For the tokens and sampled
rows of requests that use such an adapter:

    embed(t) = R[j]                     where t = I[j] (the model's embed scale applies after)
    logits[n, I] = cap(h[n] R^T)        tied models only; other columns are the base's

Base-model rows and other adapters' rows are untouched, so they share a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

_KEY = re.compile(r"^(?:base_model\.model\.)?(?:[\w.]+\.)?embed_tokens\.token_adapter\.trainable_tokens_delta"
                  r"(?:\.[\w-]+)?$")


@dataclass
class TokenRows:
    """One adapter's trained rows: ids (k,) and their embedding rows (k, H)."""

    ids: torch.Tensor
    rows: torch.Tensor


def is_token_rows_key(key: str) -> bool:
    """Whether an adapter tensor name is peft's trained token rows of the input embedding."""
    return _KEY.match(key) is not None


def token_rows(weights: dict[str, torch.Tensor], cfg: dict, where, error: type[Exception],
               hidden: int) -> TokenRows | None:
    """The adapter's TokenRows (None without any), checked against its config and the model width."""
    keys = [k for k in weights if is_token_rows_key(k)]
    indices = cfg.get("trainable_token_indices")
    if isinstance(indices, dict):  # {"embed_tokens": [...]}: only the input embedding is served
        other = [name for name in indices if not name.endswith("embed_tokens")]
        if other:
            raise error(f"{where}: trainable_token_indices on {other} is not supported (only embed_tokens)")
        indices = next(iter(indices.values()), None)
    if not keys and not indices:
        return None
    if len(keys) != 1 or not indices:
        raise error(f"{where}: trainable_token_indices {indices} and the token-row tensors {keys} do not match")
    rows = weights[keys[0]]
    if rows.shape != (len(indices), hidden):
        raise error(f"{where}: token rows of shape {tuple(rows.shape)}, expected ({len(indices)}, {hidden})")
    return TokenRows(torch.tensor(indices, dtype=torch.long), rows)


class TokenRowsEmbedding(nn.Module):
    """The base embedding, with each token-rows adapter's rows swapped in for its requests' tokens."""

    def __init__(self, base: nn.Embedding, manager):
        super().__init__()
        self.base = base
        self.manager = manager  # engine.lora.LoRAManager: its `groups` and `token_rows`

    @property
    def weight(self) -> torch.Tensor:  # read by callers that only want the device or the tied head
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.base(input_ids)  # (T, H)
        for name, rows in self.manager.groups:
            adapter = self.manager.token_rows.get(name)
            if adapter is None:
                continue
            at = _positions(rows, input_ids)
            hit = input_ids[at][:, None] == adapter.ids.to(input_ids.device)  # (t, k)
            t, j = hit.nonzero(as_tuple=True)
            x[at[t]] = adapter.rows[j].to(x)
        return x


def patch_logits(logits: torch.Tensor, hidden: torch.Tensor, owners: list[str | None], table: dict[str, TokenRows],
                 softcap: float | None) -> None:
    """Overwrite, in place, the trained ids' columns of sampled rows whose request uses a token-rows
    adapter: logits (N, V) fp32, hidden (N, H), owners[n] = row n's adapter."""
    for name, adapter in table.items():
        at = [n for n, owner in enumerate(owners) if owner == name]
        if not at:
            continue
        at_t = torch.tensor(at, dtype=torch.long, device=logits.device)
        cols = adapter.ids.to(logits.device)
        values = (hidden[at_t] @ adapter.rows.to(hidden).T).float()  # (n, k)
        if softcap:
            values = torch.tanh(values / softcap) * softcap
        logits[at_t[:, None], cols[None, :]] = values


def row_owners(sample_rows: torch.Tensor, adapter_rows: list[tuple[str | None, int, int]]) -> list[str | None]:
    """The adapter of each sampled row, from the step's (adapter, start, length) runs."""
    owners = []
    for row in sample_rows.tolist():
        owners.append(next((a for a, start, n in adapter_rows if start <= row < start + n), None))
    return owners


def _positions(rows: slice | torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    if isinstance(rows, slice):
        return torch.arange(rows.start, rows.stop, device=input_ids.device)
    return rows
