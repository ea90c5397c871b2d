"""Checkpoints: trainable weights, optimizer, scheduler, RNG and loop position.

    checkpoints/step-N/
      trainable.safetensors  only parameters with requires_grad (the adapter for LoRA)
      optimizer.pt  scheduler.pt  rng.pt
      state.json             step, epoch, step_in_epoch, tokens, elapsed, processes
      manifest.json          sha256 of every file above, written last

A checkpoint without a manifest, or whose files do not match it, is corrupt: resume
reports it and refuses to load it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.atomic import atomic_dir
from tunelab.errors import TunelabError

FILES = ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")


class CorruptCheckpoint(TunelabError):
    """A checkpoint's files are missing or do not match its manifest."""


@dataclasses.dataclass
class LoopState:
    """Where the training loop is; saved so resume continues at the same batch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    tokens: int = 0  # over all processes
    elapsed: float = 0.0
    processes: int = 1  # data-parallel processes: the per-process plan (and so step_in_epoch) depends on it


def save_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler, state: LoopState, keep_last: int) -> Path:
    """Write checkpoints/step-N atomically and drop all but the newest `keep_last`
    (an FSDP model: every process calls this and writes its own shard)."""
    from safetensors.torch import save_file

    from tunelab.train import sharded_checkpoint as sharded

    if sharded.is_sharded_model(model):
        return sharded.save_sharded(folder, model, optimizer, scheduler, state, keep_last)

    final = folder / f"step-{state.step}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(dataclasses.asdict(state)))
        (tmp / "manifest.json").write_text(json.dumps({f: _sha256(tmp / f) for f in FILES}))
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """step-N folders, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def verify(ckpt: Path) -> None:
    """Raise CorruptCheckpoint naming the file when `ckpt` does not match its manifest."""
    from tunelab.train.sharded_checkpoint import is_sharded, verify_sharded

    if is_sharded(ckpt):  # an FSDP run's per-process shards
        return verify_sharded(ckpt)
    manifest_path = ckpt / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise CorruptCheckpoint(f"checkpoint {ckpt} is corrupt: manifest.json missing or unreadable") from None
    for name in FILES:
        path = ckpt / name
        if not path.exists() or _sha256(path) != manifest.get(name):
            raise CorruptCheckpoint(
                f"checkpoint {ckpt} is corrupt: {name} does not match its checksum; "
                f"delete that folder to resume from an earlier checkpoint"
            )


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer, scheduler) -> LoopState:
    """Verify, then restore weights, optimizer, scheduler and RNG; return the loop state."""
    from safetensors.torch import load_file

    from tunelab.train import sharded_checkpoint as sharded

    if sharded.is_sharded(ckpt) or sharded.is_sharded_model(model):
        return sharded.load_sharded(ckpt, model, optimizer, scheduler)
    verify(ckpt)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    missing = {n for n, p in model.named_parameters() if p.requires_grad} - set(weights)
    if missing:
        raise CorruptCheckpoint(f"checkpoint {ckpt} does not match this model: {len(missing)} tensors missing")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    return LoopState(**json.loads((ckpt / "state.json").read_text()))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> tensor for parameters that train (contiguous copies, as safetensors wants)."""
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """Python, torch (and CUDA) RNG states, so dropout continues identically after resume."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
