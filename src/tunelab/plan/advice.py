"""When a plan does not fit: the smallest change of each kind that makes it fit, ranked by speed cost."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

from tunelab.plan.device import Device
from tunelab.plan.shape import ModelShape
from tunelab.plan.train import TrainEstimate, estimate_training
from tunelab.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Change:
    """One way to fit: config keys to set, the new peak and what it costs."""

    keys: dict[str, str]
    speed: float  # step time relative to the current plan (1.3 = 30% slower)
    cost: str
    estimate: TrainEstimate

    @property
    def overrides(self) -> str:
        """The change as `key=value` arguments of `tunelab train`."""
        return " ".join(f"{k}={v}" for k, v in self.keys.items())


Step = tuple[dict[str, str], TrainConfig]
_Kind = tuple[float, str, Callable[[TrainConfig, Device], Iterator[Step]]]


def _smaller_batches(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    mbs = cfg.micro_batch_size // 2
    while mbs >= 1:  # keep the batch: micro_batch x grad_accum stays the same
        accum = cfg.grad_accum * cfg.micro_batch_size // mbs
        yield ({"micro_batch_size": str(mbs), "grad_accum": str(accum)},
               dataclasses.replace(cfg, micro_batch_size=mbs, grad_accum=accum))
        mbs //= 2


def _lower_rank(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    rank = cfg.lora.rank // 2
    while cfg.method in ("lora", "dora", "qlora") and rank >= 4:
        yield {"lora.rank": str(rank)}, dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=rank))
        rank //= 2


def _to_lora(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    if cfg.method in ("full", "freeze"):
        yield {"method": "lora"}, dataclasses.replace(cfg, method="lora")


def _checkpointing(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    if not cfg.gradient_checkpointing:
        yield {"gradient_checkpointing": "true"}, dataclasses.replace(cfg, gradient_checkpointing=True)


def _to_qlora(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    if device.kind == "cuda" and cfg.method != "qlora":
        yield {"method": "qlora"}, dataclasses.replace(cfg, method="qlora")


def _shorter_cutoff(cfg: TrainConfig, device: Device) -> Iterator[Step]:
    cutoff = cfg.data.cutoff_len * 3 // 4 // 64 * 64  # multiples of 64, a quarter shorter each time
    while cutoff >= 64:
        yield ({"data.cutoff_len": str(cutoff)},
               dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cutoff_len=cutoff)))
        cutoff = cutoff * 3 // 4 // 64 * 64


# (step time factor, what else it costs, candidates from mildest to strongest), in the order they
# are combined when no single change fits: the cutoff last, since it changes the data
KINDS: tuple[_Kind, ...] = (
    (0.7, "trains a LoRA adapter instead of every weight", _to_lora),
    (1.05, "same batch through more micro-batches: less parallel work per step", _smaller_batches),
    (1.0, "a smaller adapter: less capacity", _lower_rank),
    (1.3, "recomputes activations in backward", _checkpointing),
    (1.5, "4-bit base: dequantised every step, slight quality loss", _to_qlora),
    (1.0, "long examples are cut (or dropped with overflow=drop)", _shorter_cutoff),
)


def advise(shape: ModelShape, cfg: TrainConfig, device: Device, limit: int = 4) -> list[Change]:
    """The smallest fitting change of each kind, cheapest first; a combination when none fits alone."""
    found = [c for c in (_first_fit(shape, cfg, device, kind) for kind in KINDS) if c is not None]
    found.sort(key=lambda c: c.speed)
    if found:
        return found[:limit]
    combined = _combine(shape, cfg, device)
    return [combined] if combined else []


def _first_fit(shape: ModelShape, cfg: TrainConfig, device: Device, kind: _Kind) -> Change | None:
    speed, cost, candidates = kind
    for keys, new in candidates(cfg, device):
        est = estimate_training(shape, new, device)
        if est.fits:
            return Change(keys, speed, cost, est)
    return None


def _combine(shape: ModelShape, cfg: TrainConfig, device: Device) -> Change | None:
    """In KINDS order: take each kind's mildest fitting step, else its strongest, and go on."""
    keys: dict[str, str] = {}
    speed, costs = 1.0, []
    for factor, cost, candidates in KINDS:
        steps = list(candidates(cfg, device))
        if not steps:
            continue
        fitting = [s for s in steps if estimate_training(shape, s[1], device).fits]
        step_keys, cfg = fitting[0] if fitting else steps[-1]
        keys.update(step_keys)
        speed, costs = speed * factor, costs + [cost]
        if fitting:
            return Change(keys, speed, "; ".join(costs), estimate_training(shape, cfg, device))
    return None
