"""Owner-tagged temp names: a writer's leftovers are swept only once their process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tunelab.atomic import atomic_file, owned_prefix, owner_alive, sweep_dead
from tunelab.process import start_token


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_dead_owners(tmp_path: Path):
    mine = tmp_path / (owned_prefix("a.gguf") + "x1")
    mine.write_bytes(b"1" * 10)
    dead = tmp_path / f".a.gguf.tmp-{_dead_pid()}.123-x2"
    dead.write_bytes(b"2" * 7)
    reused = tmp_path / f".b.tmp-{os.getpid()}.{int(start_token(os.getpid())) + 1}-x3"  # same PID, other start
    (reused / "merged").mkdir(parents=True)
    (reused / "merged" / "w").write_bytes(b"3" * 5)
    untagged = tmp_path / ".c.tmp-abc"
    untagged.write_bytes(b"4")
    assert owner_alive(mine) and not owner_alive(dead) and not owner_alive(reused)
    assert sweep_dead(tmp_path) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, untagged.name])


def test_atomic_file_sweeps_a_killed_writers_temp(tmp_path: Path):
    out = tmp_path / "model.gguf"
    (tmp_path / f".model.gguf.tmp-{_dead_pid()}.1-zz").write_bytes(b"partial")
    with atomic_file(out) as tmp:
        assert f".tmp-{os.getpid()}." in tmp.name
        tmp.write_bytes(b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
