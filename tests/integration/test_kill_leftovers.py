"""SIGKILL real `tunelab export` and `tunelab pull` processes mid-write: what they leave is tagged
with their PID, `tunelab list` reports it, and the next writing command sweeps it (issue 13, item 10)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from serve_util import finish_run, make_lora_adapter


def _tunelab(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "TUNELAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunelab", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(home: Path, *args: str) -> str:
    proc = _tunelab(home, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL `proc` as soon as `ready()` (it is then mid-write)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if ready():
            proc.kill()
            proc.communicate()
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before {what}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"never saw {what}")


def _store_tmp(home: Path) -> list[Path]:
    return list((home / "tmp").glob("*")) if (home / "tmp").is_dir() else []


def _has_bytes(paths: list[Path]) -> bool:
    return any(f.is_file() and f.stat().st_size > 0 for p in paths for f in [p, *p.rglob("*")])


# ---- pull ---------------------------------------------------------------------------------------


def _big_source(tiny: Path, out: Path, gib: float = 1.0) -> Path:
    """The tiny model plus a sparse (free to read) extra shard, so copying it takes a while."""
    out.mkdir()
    for f in tiny.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    n = int(gib * 2**30) // 4
    header = json.dumps({"extra.weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    header += " " * (-len(header) % 8)
    with open(out / "model-extra.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode())
        f.truncate(8 + len(header) + 4 * n)
    return out


def test_killed_pull_is_swept_by_the_next_pull(tiny_models, tmp_path):
    home = tmp_path / "home"
    source = _big_source(tiny_models["llama"], tmp_path / "big")
    proc = _tunelab(home, "pull", str(source), "--name", "big")
    _kill_when(proc, lambda: _has_bytes(_store_tmp(home)), "a partial copy in the store's tmp/")
    left = _store_tmp(home)
    assert left and all(f".tmp-{proc.pid}." in p.name for p in left)  # tagged with its owner
    assert "left by killed commands" in _run(home, "list")
    said = _run(home, "pull", str(tiny_models["qwen2"]), "--name", "small")
    assert "removed" in said and "killed commands" in said
    assert _store_tmp(home) == []
    assert "killed" not in _run(home, "list")


# ---- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    """A finished LoRA run on a ~50M-parameter llama: its merge and GGUF write take a moment."""
    import torch
    import transformers as tf

    from tiny_models import TOKENIZER_DIR, tiny_config

    root = tmp_path_factory.mktemp("export_kill")
    cfg = tiny_config("llama")
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.head_dim = 1024, 2816, 4, 64
    cfg.num_attention_heads, cfg.num_key_value_heads = 16, 4
    torch.manual_seed(0)
    base = root / "base"
    tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(base)
    tf.AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(base)
    run = root / "runs" / "bigrun"
    finish_run(run, make_lora_adapter(base, root / "adapter"), base, "finished")
    return run


def test_killed_export_is_swept_by_the_next_export(big_run, tmp_path):
    home, dest = tmp_path / "home", tmp_path / "out" / "big.gguf"
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tunelab-export-*")))
    args = ("export", str(big_run), "--quant", "f16", "--out", str(dest))
    merging = _tunelab(home, *args)  # killed while merging the adapter into its scratch copy
    _kill_when(merging, lambda: _has_bytes(_store_tmp(home)), "the merge in the store's tmp/")
    writing = _tunelab(home, *args)  # killed while writing the GGUF beside the destination
    beside = lambda: list(dest.parent.glob(f".{dest.name}.tmp-*")) if dest.parent.is_dir() else []
    _kill_when(writing, lambda: _has_bytes(beside()), "the GGUF temp file beside the destination")
    assert beside() and _store_tmp(home)
    said = _run(home, *args)
    assert "removed" in said
    assert dest.is_file() and beside() == [] and _store_tmp(home) == []
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "tunelab-export-*"))) <= before
