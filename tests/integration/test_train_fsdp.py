"""FSDP2 on CPU (gloo): `accelerate launch --config_file configs/accelerate_fsdp.yaml` and
`ACCELERATE_USE_FSDP=true torchrun`, 2 processes, each holding half of every weight.

As with DDP (test_train_ddp.py), one optimizer step of 2 processes x grad_accum 1 covers the
micro-batches of one process with grad_accum 2, so losses, grad norms, eval losses and the final
weights must match the one-process run; checkpoints are per-process shards that resume exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from integration.test_train_ddp import COMMON, _free_port, _metrics, _output, _workers, chat_file  # noqa: F401

from tunelab.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_fsdp_lora_trains_like_one_process_and_saves_a_peft_adapter(tiny_models, chat_file, tmp_path):
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", "max_steps=6", "eval_split=0.2", "eval_every=3",
            "save_every=3", *COMMON]
    fsdp, one = tmp_path / "fsdp", tmp_path / "one"
    proc = _launch([*args, f"output={fsdp}"], "accelerate")
    out = _output(proc, timeout=240)
    assert proc.returncode == 0, out
    assert main(["train", *args, f"output={one}", "grad_accum=2"]) == 0

    status = json.loads((fsdp / "status.json").read_text())
    assert (status["state"], status["step"], status["processes"]) == ("finished", 6, 2)
    rows, ref = _metrics(fsdp), _metrics(one)
    for key in ("loss", "tokens", "grad_norm"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], rel=1e-5), key
    assert [r["step"] for r in rows if "eval_loss" in r] == [r["step"] for r in ref if "eval_loss" in r] == [3, 6]
    assert [r["eval_loss"] for r in rows if "eval_loss" in r] == \
        pytest.approx([r["eval_loss"] for r in ref if "eval_loss" in r], rel=1e-5)
    # one shard per process, no whole-weight file, and the manifest covers them
    from tunelab.train.checkpoint import list_checkpoints, verify

    for ckpt in list_checkpoints(fsdp / "checkpoints"):
        assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
        assert not (ckpt / "trainable.safetensors").exists()
        verify(ckpt)
    _assert_same_weights(fsdp / "adapter" / "adapter_model.safetensors", one / "adapter" / "adapter_model.safetensors")
    _assert_loads_in_peft(model, fsdp / "adapter")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker pids in /proc")
def test_fsdp_full_sigterm_on_one_process_then_resume_from_shards(tiny_models, chat_file, tmp_path):
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", "method=full", *COMMON]
    run = tmp_path / "r"
    proc = _launch([*args, f"output={run}", "max_steps=100000"], "torchrun")
    deadline = time.time() + 240
    while time.time() < deadline and len(_metrics(run)) < 3 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, _output(proc, timeout=10)
    main_pid = json.loads((run / "status.json").read_text())["pid"]
    (other,) = [pid for pid in _workers(proc.pid) if pid != main_pid]
    os.kill(other, signal.SIGTERM)  # the main process must stop after the same step and write its shard
    out = _output(proc, timeout=120)
    assert re.search(r"exitcode\s*:\s*130", out), out
    status = json.loads((run / "status.json").read_text())
    stopped = status["step"]
    assert status["state"] == "stopped" and 3 <= stopped < 100000
    assert (run / "checkpoints" / f"step-{stopped}" / "sharded" / "__1_0.distcp").exists()

    proc = _launch(["--resume", str(run), f"max_steps={stopped + 2}"], "torchrun")
    out = _output(proc, timeout=240)
    assert proc.returncode == 0, out
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, stopped + 3))
    assert main(["train", *args, f"output={tmp_path / 'ref'}", f"max_steps={stopped + 2}", "grad_accum=2"]) == 0
    ref = _metrics(tmp_path / "ref")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
    _assert_same_weights(run / "model" / "model.safetensors", tmp_path / "ref" / "model" / "model.safetensors")


def test_a_deepspeed_launch_is_refused_before_loading(tiny_models, chat_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` exports for ZeRO configs
    assert main(["train", f"model={tiny_models['llama']}", f"datasets={chat_file}", f"output={tmp_path / 'r'}"]) != 0
    assert "DEEPSPEED is not supported" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _launch(train_args: list[str], launcher: str) -> subprocess.Popen:
    """`tunelab train` as 2 CPU processes under FSDP2, started the way users start it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if launcher == "torchrun":  # accelerate's own variables, as `accelerate launch` would export them
        env.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
        start = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        start = ["accelerate.commands.launch", "--config_file", str(ROOT / "configs" / "accelerate_fsdp.yaml"),
                 "--main_process_port", str(_free_port())]
    cmd = [sys.executable, "-m", *start, "-m", "tunelab", "train", *train_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for name in x:  # 2 processes reduce gradients in another order than 1 process x grad_accum 2: ~1e-6 apart
        torch.testing.assert_close(x[name], y[name], rtol=1e-4, atol=1e-5)


def _assert_loads_in_peft(model: Path, adapter: Path) -> None:
    """peft's own loader takes the gathered adapter, and it changes the base model's output."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4]])
    base = AutoModelForCausalLM.from_pretrained(str(model))
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, str(adapter))
    assert not torch.allclose(tuned(ids).logits, before)


def test_two_nodes_meet_through_torchrun_rendezvous(tiny_models, chat_file, tmp_path):
    """Two torchrun agents (`--nnodes 2`, one process each, on localhost) form one FSDP job."""
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", "max_steps=2", *COMMON]
    run, port = tmp_path / "nodes", _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_FSDP="true")
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(rank), "--rdzv_id", "t22", "--rdzv_backend", "c10d",
         "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "tunelab", "train", *args, f"output={run}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for rank in (0, 1)]
    outs = [_output(agent, timeout=240) for agent in agents]
    assert all(agent.returncode == 0 for agent in agents), outs
    assert json.loads((run / "status.json").read_text())["processes"] == 2
    assert main(["train", *args, f"output={tmp_path / 'one'}", "grad_accum=2"]) == 0
    assert [r["loss"] for r in _metrics(run)] == pytest.approx([r["loss"] for r in _metrics(tmp_path / "one")],
                                                               rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP over NCCL needs 2 GPUs, one per process")
def test_fsdp_on_two_gpus_goes_through_accelerates_prepare(tiny_models, chat_file, tmp_path):
    """The GPU path (accelerate's FSDP2 `prepare`, not ours) trains like one GPU with grad_accum 2."""
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", "max_steps=4", "precision=fp32", "save_every=2", *COMMON]
    proc = _launch([*args, f"output={tmp_path / 'fsdp'}"], "accelerate")
    out = _output(proc, timeout=300)
    assert proc.returncode == 0, out
    assert main(["train", *args, f"output={tmp_path / 'one'}", "grad_accum=2"]) == 0
    rows, ref = _metrics(tmp_path / "fsdp"), _metrics(tmp_path / "one")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=1e-4)  # GPU reductions reorder
    assert (tmp_path / "fsdp" / "checkpoints" / "step-4" / "sharded" / "__1_0.distcp").exists()
    _assert_loads_in_peft(model, tmp_path / "fsdp" / "adapter")
