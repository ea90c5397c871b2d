"""What the trainer needs to run as N data-parallel processes (torchrun / accelerate launch).

Every process runs the same loop on its own share of the seeded plan; these helpers are the
few points where they must agree:

    run dir name   decided by the main process, broadcast (a time-stamped default differs per process)
    loss, tokens   summed over processes, so metrics and the gradient scale are global
    stop           a signal seen by any process stops all of them after the same step

With one process every helper returns its input unchanged and touches no process group.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from tunelab.errors import TunelabError

UNSUPPORTED = ("DEEPSPEED", "MEGATRON_LM")  # FSDP (2) is handled in train/sharding.py


def process_state():
    """accelerate's PartialState (initialises the process group under a launcher)."""
    from accelerate import PartialState

    refuse_deepspeed()

    # must match the `cpu` flag the trainer's Accelerator is built with: the state is shared
    return PartialState(cpu=not torch.cuda.is_available())


def refuse_deepspeed() -> None:
    """Stop a DeepSpeed launch (accelerate's ACCELERATE_USE_DEEPSPEED) before accelerate needs the
    deepspeed package, or, on CPU where accelerate ignores the request, silently runs plain DDP."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        _unsupported("DEEPSPEED")


def check_supported(accelerator) -> None:
    """Refuse DeepSpeed/Megatron launches; FSDP2 is train/sharding.py's."""
    if accelerator.distributed_type.name in UNSUPPORTED:
        _unsupported(accelerator.distributed_type.name)


def _unsupported(kind: str) -> None:
    raise TunelabError(f"{kind} is not supported by tunelab train yet; shard with FSDP2 instead "
                       "(`accelerate launch --config_file configs/accelerate_fsdp.yaml`), or launch "
                       "plain data-parallel (torchrun, or `accelerate launch` with a multi-GPU/CPU config)")


def broadcast(values: list[Any]) -> list[Any]:
    """The main process's `values` (picklable) on every process."""
    from accelerate.utils import broadcast_object_list

    if process_state().num_processes == 1:
        return values
    return broadcast_object_list(list(values), from_process=0)


def all_sum(accelerator, values: Sequence[float]) -> list[float]:
    """Each value summed over all processes (one small all-reduce); unchanged with one process."""
    if accelerator.num_processes == 1:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def any_process(accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on at least one."""
    return all_sum(accelerator, [1.0 if flag else 0.0])[0] > 0
