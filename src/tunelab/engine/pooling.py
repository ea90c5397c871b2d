"""How a model turns its final hidden states into one embedding: pooling, then normalisation.

The rule comes from the model directory's sentence-transformers layout when it has one
(`modules.json` -> `1_Pooling/config.json`, a `Normalize` module), e.g. Qwen3-Embedding's
last-token pooling with L2 normalisation; any other model embeds by mean pooling, not
normalised, as sentence-transformers itself does for a plain Hugging Face model.
Modes mirror sentence-transformers' Pooling; several modes are concatenated in the order given.
A reward model (the engine's scoring mode, `score_pooling`) pools its last token and applies
its score head, as transformers' *ForSequenceClassification does: (L, H) -> h[-1] @ W.T -> (1,).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
           "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
           "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class Pooling:
    """One model's embedding rule; `problem` names a module tunelab cannot run (requests are refused)."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False  # the model's own Normalize module: unit-length vectors
    source: str = "default"  # "sentence-transformers" when read from modules.json
    problem: str | None = None
    # a reward model's score head (num_labels, H), applied to the pooled vector: the scores
    head: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """One line for /api/show: e.g. 'lasttoken pooling, L2-normalised (sentence-transformers)'."""
        norm = ", L2-normalised" if self.normalize else ""
        head = ", score head" if self.head is not None else ""
        return f"{'+'.join(self.modes)} pooling{norm}{head} ({self.source})"

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (L, H) final hidden states of one prompt -> (D,) fp32 embedding, or (num_labels,) scores."""
        h = hidden.float()
        vectors = [_pool_one(h, mode) for mode in self.modes]
        out = torch.cat(vectors) if len(vectors) > 1 else vectors[0]
        if self.head is not None:
            return self.head.detach().float() @ out  # (num_labels, H) @ (H,); no autograd on a Parameter
        return l2_normalize(out) if self.normalize else out


def score_pooling(head: torch.Tensor) -> Pooling:
    """A reward model's rule: the last token's final hidden state times its score head (num_labels, H);
    each prompt runs alone, unpadded, so its last token is its last real token."""
    return Pooling(("lasttoken",), source="reward model", head=head)


def _pool_one(h: torch.Tensor, mode: str) -> torch.Tensor:
    """(L, H) -> (H,) by one sentence-transformers pooling mode."""
    if mode == "cls":
        return h[0]
    if mode == "lasttoken":
        return h[-1]
    if mode == "max":
        return h.max(dim=0).values
    if mode == "mean":
        return h.mean(dim=0)
    if mode == "mean_sqrt_len_tokens":
        return h.sum(dim=0) / (h.shape[0] ** 0.5)
    weights = torch.arange(1, h.shape[0] + 1, dtype=h.dtype, device=h.device)[:, None]  # weightedmean
    return (h * weights).sum(dim=0) / weights.sum()


def l2_normalize(v: torch.Tensor) -> torch.Tensor:
    """Unit length along the last dim (a zero vector stays zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def read_pooling(model_dir: str | Path) -> Pooling:
    """The model's pooling rule: its sentence-transformers modules, else mean pooling."""
    path = Path(model_dir) / "modules.json"
    if not path.is_file():
        return Pooling()
    modes, normalize, problem = ("mean",), False, None
    for module in json.loads(path.read_text()):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            modes = _modes(Path(model_dir) / module.get("path", "") / "config.json")
        elif kind == "Normalize":
            normalize = True
        elif kind not in _SUPPORTED_MODULES and problem is None:
            problem = (f"the model's sentence-transformers module {module.get('path') or kind!r} "
                       f"({kind}) is not supported; only Transformer, Pooling and Normalize are")
    return Pooling(modes, normalize, "sentence-transformers", problem)


def _modes(config: Path) -> tuple[str, ...]:
    """Pooling modes from a 1_Pooling/config.json (new `pooling_mode` or the legacy booleans)."""
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    mode = cfg.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(name for key, name in _LEGACY.items() if cfg.get(key))
    return tuple(m for m in modes if m in MODES) or ("mean",)  # concatenated in this order, as ST does
