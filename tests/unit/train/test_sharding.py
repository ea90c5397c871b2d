"""FSDP helpers that need no process group: the eval split and the launch checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunelab.errors import TunelabError
from tunelab.train import sharding
from tunelab.train.config import TrainConfig


def _acc(rank: int, world: int, kind: str = "MULTI_CPU"):
    """The few attributes of accelerate's Accelerator that the helpers read."""
    return SimpleNamespace(process_index=rank, num_processes=world, state=SimpleNamespace(),
                           distributed_type=SimpleNamespace(name=kind))


def test_eval_batches_are_padded_so_every_process_runs_the_same_number_of_forwards():
    plan = ["a", "b", "c", "d", "e"]
    assert sharding.eval_share(plan, _acc(0, 2), sharded=True) == [("a", True), ("c", True), ("e", True)]
    assert sharding.eval_share(plan, _acc(1, 2), sharded=True) == [("b", True), ("d", True), ("a", False)]
    assert sharding.eval_share(plan, _acc(1, 2), sharded=False) == [("b", True), ("d", True)]  # DDP: no padding


def test_fsdp_launch_checks_name_the_setting(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharding.requested(_acc(0, 2)) and not sharding.requested(_acc(0, 1))  # one process: nothing to shard
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(TunelabError, match="fsdp_version: 1"):
        sharding.check(_acc(0, 2), TrainConfig())
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(TunelabError, match="method=qlora"):
        sharding.check(_acc(0, 2), TrainConfig(method="qlora"))
    sharding.check(_acc(0, 2), TrainConfig(method="lora"))
