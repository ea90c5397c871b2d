"""`tunelab train`'s pre-flight: refuse a plan that cannot fit, before loading anything."""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig


class PlanDoesNotFit(TunelabError):
    """The memory plan exceeds the device; the message carries the advice."""


def check_memory_plan(cfg: TrainConfig) -> None:
    """Raise PlanDoesNotFit with the plan's advice unless it fits (or ignore_memory_plan is set)."""
    if cfg.ignore_memory_plan:
        return
    from tunelab.plan.advice import advise
    from tunelab.plan.device import detect_device
    from tunelab.plan.render import advice_lines, gib
    from tunelab.plan.source import model_shape
    from tunelab.plan.train import estimate_training

    shape, _ = model_shape(cfg.model)
    device = detect_device()
    est = estimate_training(shape, cfg, device)
    if est.fits:
        return
    raise PlanDoesNotFit(
        f"memory plan: this run needs ~{gib(est.total)} but {device}. "
        + advice_lines(advise(shape, cfg, device)).replace("\n", " |")
        + " | see `tunelab plan` for the breakdown; ignore_memory_plan=true trains anyway"
    )
