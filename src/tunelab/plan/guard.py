"""`tunelab train`'s pre-flight: refuse a plan that cannot fit, after reading the data and
before loading the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig


class PlanDoesNotFit(TunelabError):
    """The memory plan exceeds the device; the message carries the advice."""


def check_memory_plan(cfg: TrainConfig, examples: list | None = None, model_dir: Path | None = None) -> None:
    """Raise PlanDoesNotFit with the plan's advice unless it fits (or ignore_memory_plan is set).

    Unpacked micro-batches are padded to their longest example, so the plan uses
    min(cutoff_len, longest example) rather than the worst case `tunelab plan` shows."""
    if cfg.ignore_memory_plan:
        return
    from tunelab.plan.advice import advise
    from tunelab.plan.device import detect_device
    from tunelab.plan.render import advice_lines, gib
    from tunelab.plan.source import model_shape
    from tunelab.plan.train import estimate_training

    shape, _ = model_shape(str(model_dir) if model_dir else cfg.model)  # the resolved dir: no hub call
    device = detect_device()
    planned = _at_data_length(cfg, examples)
    est = estimate_training(shape, planned, device)
    if est.fits:
        return
    raise PlanDoesNotFit(
        f"memory plan: this run needs ~{gib(est.total)} but {device}. "
        + advice_lines(advise(shape, planned, device)).replace("\n", " |")
        + " | see `tunelab plan` for the breakdown; ignore_memory_plan=true trains anyway"
    )


def _at_data_length(cfg: TrainConfig, examples: list | None) -> TrainConfig:
    """cfg with cutoff_len lowered to the longest example (unpacked batches are padded to it) and
    micro_batch_size to the number of examples."""
    lengths = [len(e.input_ids) for e in examples or () if hasattr(e, "input_ids")]
    if not lengths:
        return cfg
    cutoff = cfg.data.cutoff_len if cfg.packing else min(cfg.data.cutoff_len, max(lengths))
    return dataclasses.replace(cfg, micro_batch_size=min(cfg.micro_batch_size, len(lengths)),
                               data=dataclasses.replace(cfg.data, cutoff_len=cutoff))
