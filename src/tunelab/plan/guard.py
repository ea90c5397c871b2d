"""`tunelab train`'s pre-flight: refuse a plan that cannot fit before the weights load, and one
that cannot fit whatever the data before anything loads (the data, the tokenizer, the weights or
a download of them): the model's shape comes from its config.json."""

from __future__ import annotations

import dataclasses

from tunelab.errors import TunelabError
from tunelab.train.config import TrainConfig


SHORTEST = 8  # tokens: DataConfig's smallest cutoff_len


class PlanDoesNotFit(TunelabError):
    """The memory plan exceeds the device; the message carries the advice."""


def check_memory_plan(cfg: TrainConfig, examples: list | None = None, data_read: bool = True) -> None:
    """Raise PlanDoesNotFit with the plan's advice unless it fits (or ignore_memory_plan is set).

    `tunelab train` checks twice. Before anything loads (data_read=False, only config.json read) it
    refuses a plan that cannot fit even with the shortest examples: the weights, optimizer states
    and one short micro-batch already exceed the device. Once the data is read, before the weights
    load, it checks the plan at the data's length: unpacked micro-batches are padded to their
    longest example, so min(cutoff_len, longest), not `tunelab plan`'s cutoff_len. Examples passed
    in memory (`train(examples=...)`) count as read."""
    if cfg.ignore_memory_plan:
        return
    from tunelab.plan.advice import advise
    from tunelab.plan.device import detect_device
    from tunelab.plan.render import advice_lines, gib
    from tunelab.plan.source import model_shape
    from tunelab.plan.train import estimate_training

    shape, _ = model_shape(cfg.model)  # a hub id fetches config.json only
    device = detect_device()
    planned = _at_data_length(cfg, examples)
    bound = not data_read and not examples  # a lower bound: the data's length is not known yet
    est = estimate_training(shape, _shortest(cfg) if bound else planned, device)
    if est.fits:
        return
    raise PlanDoesNotFit(
        f"memory plan: this run needs {'at least ' if bound else ''}~{gib(est.total)} but {device}. "
        + advice_lines(advise(shape, planned, device)).replace("\n", " |")
        + " | see `tunelab plan` for the breakdown; ignore_memory_plan=true trains anyway"
    )


def _shortest(cfg: TrainConfig) -> TrainConfig:
    """cfg with one example of SHORTEST tokens per micro-batch: what any data needs at least."""
    return dataclasses.replace(cfg, micro_batch_size=1, data=dataclasses.replace(cfg.data, cutoff_len=SHORTEST))


def _at_data_length(cfg: TrainConfig, examples: list | None) -> TrainConfig:
    """cfg with cutoff_len lowered to the longest example (unpacked batches are padded to it) and
    micro_batch_size to the number of examples."""
    lengths = [len(e.input_ids) for e in examples or () if hasattr(e, "input_ids")]
    if not lengths:
        return cfg
    cutoff = cfg.data.cutoff_len if cfg.packing else min(cfg.data.cutoff_len, max(lengths))
    return dataclasses.replace(cfg, micro_batch_size=min(cfg.micro_batch_size, len(lengths)),
                               data=dataclasses.replace(cfg.data, cutoff_len=cutoff))
