"""Helpers for the serve tests: a real server on a free loopback port, and a tiny LoRA adapter."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tunelab.cli import parse
from tunelab.commands.serve import build_config
from tunelab.config import build
from tunelab.serve.app import create_app
from tunelab.serve.backends import make_backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.server import ThreadedServer

API_KEY = "test-key-123"


@contextmanager
def private_home(root: Path, models: dict[str, Path]) -> Iterator[Path]:
    """$TUNELAB_HOME at `root/home` with `models` (store name -> model dir) pulled into it; the
    old home comes back afterwards."""
    from tunelab.store.pull import pull

    old = os.environ["TUNELAB_HOME"]
    os.environ["TUNELAB_HOME"] = str(root / "home")
    try:
        for name, model_dir in models.items():
            pull(str(model_dir), name=name)
        yield root / "home"
    finally:
        os.environ["TUNELAB_HOME"] = old


def start_server(model: Path | str | None, **overrides) -> ThreadedServer:
    """Serve `model` on 127.0.0.1:0 and wait until /health says ready."""
    # through build, so flat engine keys (dtype, context_length, n_threads) work as in YAML
    cfg = build(ServeConfig, {"model": str(model) if model else None, "port": 0, "access_log": False, **overrides})
    server = ThreadedServer(create_app(make_backend(cfg), cfg), cfg).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = httpx.get(server.url + "/health")
        if r.status_code == 200:
            return server
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "loading", r.text
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def metrics(url: str) -> dict[str, float]:
    """Unlabelled samples of /metrics as name -> value (the test key is sent; keyless servers ignore it)."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


def wait_idle(url: str, timeout: float = 10.0) -> dict[str, float]:
    """Wait until nothing runs, waits or holds KV blocks; return the metrics."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(url)
        idle = (m["tunelab_num_requests_running"] == 0 and m["tunelab_num_requests_waiting"] == 0
                and m["tunelab_kv_cache_usage_perc"] == 0 and m["tunelab_num_requests_pending"] == 0)
        if idle or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def make_lora_adapter(model_dir: Path, out: Path, seed: int = 1) -> Path:
    """A random (non-zero) PEFT LoRA adapter for a tiny model, saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                     init_lora_weights=False)
    model = get_peft_model(base, cfg)
    with torch.no_grad():  # big enough that greedy output surely changes
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.mul_(8.0)
    model.save_pretrained(out)
    return out


def finish_run(run_dir: Path, adapter_src: Path, base: Path, state: str) -> None:
    """Lay out runs/NAME as `tunelab train` does, with status.json in `state`."""
    import shutil

    if not (run_dir / "adapter").exists():
        shutil.copytree(adapter_src, run_dir / "adapter")
    status = {"state": state, "base_model": str(base), "step": 1, "total_steps": 1}
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps(status))
    tmp.replace(run_dir / "status.json")


def start_vllm_server(model: Path, adapter: Path, *flags: str) -> ThreadedServer:
    """`tunelab serve --backend vllm` on a free loopback port with adapter `sql`, once /health is 200."""
    cfg = build_config(parse(["serve", "--backend", "vllm", "--model", str(model), "--host", "127.0.0.1",
                              "--port", "0", "--enable-lora", "--lora-modules", f"sql={adapter}",
                              "--access-log", "false", *flags]))
    server = ThreadedServer(create_app(make_backend(cfg), cfg), cfg).start()
    deadline = time.monotonic() + 300
    while httpx.get(server.url + "/health").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)
    return server


def openai_error(call) -> dict:
    """The `error` object (message, type, param, code) of the openai client's BadRequestError that `call` raises."""
    import openai
    import pytest

    with pytest.raises(openai.BadRequestError) as info:
        call()
    return info.value.body
