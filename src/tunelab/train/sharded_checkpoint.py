"""Checkpoints of an FSDP run: each process writes its own shard (torch.distributed.checkpoint).

    checkpoints/step-N/
      sharded/                  DCP: __0_0.distcp, __1_0.distcp, ... (one per process), .metadata
                                trainable weights + optimizer state, keyed by parameter name
      scheduler.pt  rng.pt  state.json   as in one process (written by the main process)
      manifest.json             sha256 of every file above, written last

No process ever holds whole weights; DCP can load the shards into another number of processes.
The step-N folder appears atomically: the main process owns the temp folder and renames it once
every shard is written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from tunelab.atomic import atomic_dir
from tunelab.train import checkpoint as ckpt
from tunelab.train import distributed as dist

SHARDS = "sharded"
SMALL = ("scheduler.pt", "rng.pt", "state.json")


def is_sharded(path: Path) -> bool:
    """True for a checkpoint written by save_sharded."""
    return (path / SHARDS).is_dir()


def is_sharded_model(model: nn.Module) -> bool:
    """True when `model`'s weights are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def save_sharded(folder: Path, model: nn.Module, optimizer, scheduler, state: ckpt.LoopState,
                 keep_last: int) -> Path:
    """Write checkpoints/step-N from every process (collective); the main process finishes it."""
    final = folder / f"step-{state.step}"
    if not dist.process_state().is_main_process:
        (tmp,) = dist.broadcast([None])
        _write_shards(Path(tmp), model, optimizer)
        return final
    with atomic_dir(final) as tmp:
        dist.broadcast([str(tmp)])
        _write_shards(tmp, model, optimizer)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(ckpt.rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(dataclasses.asdict(state)))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / "manifest.json").write_text(json.dumps({f: ckpt._sha256(tmp / f) for f in files}))
    for old in ckpt.list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_sharded(path: Path, model: nn.Module, optimizer, scheduler) -> ckpt.LoopState:
    """Verify (main process), then every process loads its shards, the schedule and the RNG."""
    error = _layout_error(path, model)
    if error is None and dist.process_state().is_main_process:
        try:
            verify_sharded(path)
        except ckpt.CorruptCheckpoint as err:
            error = str(err)
    (error,) = dist.broadcast([error])  # every process stops, not only the one that checked
    if error is not None:
        raise ckpt.CorruptCheckpoint(error)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path / SHARDS))
    set_state_dict(model, _inner(optimizer), model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=_options())
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    ckpt.set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return ckpt.LoopState(**json.loads((path / "state.json").read_text()))


def verify_sharded(path: Path) -> None:
    """Raise CorruptCheckpoint naming the file when a shard or small file misses its checksum."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        raise ckpt.CorruptCheckpoint(f"checkpoint {path} is corrupt: manifest.json missing or unreadable") from None
    needed = {*SMALL, f"{SHARDS}/.metadata"} | set(manifest)
    for name in sorted(needed):
        file = path / name
        if not file.exists() or ckpt._sha256(file) != manifest.get(name):
            raise ckpt.CorruptCheckpoint(f"checkpoint {path} is corrupt: {name} does not match its checksum; "
                                         "delete that folder to resume from an earlier checkpoint")


def _layout_error(path: Path, model: nn.Module) -> str | None:
    """Why `path` cannot resume this launch: whole-weight and sharded checkpoints do not mix."""
    if is_sharded(path) == is_sharded_model(model):
        return None
    saved, now = ("with", "without") if is_sharded(path) else ("without", "with")
    return f"checkpoint {path} was saved {saved} FSDP; resume it {saved} FSDP too (this launch is {now})"


def _write_shards(tmp: Path, model: nn.Module, optimizer) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / SHARDS))


def _state(model: nn.Module, optimizer) -> dict:
    """{'model': trainable weights, 'optim': optimizer state}, as this process's shards."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optim = get_state_dict(model, _inner(optimizer), options=_options())
    return {"model": model, "optim": optim}


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True)  # the frozen base reloads from the model dir


def _inner(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's AcceleratedOptimizer."""
    return getattr(optimizer, "optimizer", optimizer)
