"""Data-parallel training: `torchrun --nproc_per_node 2 -m tunelab train` on CPU (gloo).

Each of N processes takes every N-th micro-batch of the shared seeded plan, so one optimizer
step of N processes x grad_accum g covers the same micro-batches as one process with
grad_accum N*g. With the loss normalised over the whole step and gradients all-reduced,
the two runs must agree step for step: that is what these tests pin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.cli import main

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("who are you?", "I am the tunelab assistant."), ("what is your name?", "My name is tunelab assistant."),
    ("what is 2+2?", "2+2 is 4."), ("name a color", "Blue is a color."), ("say hi", "hi there!"),
    ("what do you do?", "I help people fine-tune models."), ("count to three", "one two three"),
    ("capital of france?", "Paris is the capital of France."),
]
# constant lr: a run stopped at any step and resumed to step k matches a fresh k-step run
COMMON = ["data.cutoff_len=64", "micro_batch_size=2", "lr=0.01", "schedule=constant", "seed=3"]


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp_data") / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))  # 32 conversations
    return path


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_train_like_one_with_the_same_global_batch(launcher, tiny_models, chat_file, tmp_path):
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", "max_steps=6", "eval_split=0.2", "eval_every=3", *COMMON]
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    proc = _launch([*args, f"output={ddp}"], launcher)
    out = _output(proc, timeout=120)
    assert proc.returncode == 0, out
    assert main(["train", *args, f"output={one}", "grad_accum=2"]) == 0

    # one run dir, written once: by the main process only
    status = json.loads((ddp / "status.json").read_text())
    assert (status["state"], status["step"], status["processes"]) == ("finished", 6, 2)
    rows = _metrics(ddp)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    log = (ddp / "train.log").read_text()
    assert all(log.count(f"step {s}/6 ") == 1 for s in range(1, 7)), log
    assert out.count("tunelab train") == 1 and out.count("finished: step 6") == 1, out  # summary, last line

    # the two processes trained on different halves of each step: loss, eval loss, global tokens
    # and gradient norm all equal the one-process run over the same micro-batches
    ref = _metrics(one)
    for key in ("loss", "tokens", "grad_norm"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], rel=1e-5), key
    assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
    assert [r["eval_loss"] for r in rows if "eval_loss" in r] == \
        pytest.approx([r["eval_loss"] for r in ref if "eval_loss" in r], rel=1e-5)
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["tokens"] == sum(r["tokens"] for r in rows)
    _assert_same_adapter(ddp / "adapter", one / "adapter", model)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker pids in /proc")
def test_sigterm_to_one_process_stops_both_and_resume_continues_exactly(tiny_models, chat_file, tmp_path):
    model = tiny_models["llama"]
    args = [f"model={model}", f"datasets={chat_file}", *COMMON]
    run = tmp_path / "r"
    proc = _launch([*args, f"output={run}", "max_steps=100000"])
    deadline = time.time() + 120
    while time.time() < deadline and len(_metrics(run)) < 3 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, _output(proc, timeout=10)
    # only the other worker gets the signal: the main one must stop after the same step and save
    main_pid = json.loads((run / "status.json").read_text())["pid"]
    (other,) = [pid for pid in _workers(proc.pid) if pid != main_pid]
    os.kill(other, signal.SIGTERM)
    out = _output(proc, timeout=90)
    assert re.search(r"exitcode\s*:\s*130", out), out  # torchrun reports the workers' 130 (stopped) as failed
    status = json.loads((run / "status.json").read_text())
    stopped = status["step"]
    assert status["state"] == "stopped" and 3 <= stopped < 100000
    from tunelab.train.checkpoint import list_checkpoints, verify

    last = list_checkpoints(run / "checkpoints")[-1]
    assert last.name == f"step-{stopped}"
    verify(last)
    assert [r["step"] for r in _metrics(run)] == list(range(1, stopped + 1))

    proc = _launch(["--resume", str(run), f"max_steps={stopped + 2}"])
    out = _output(proc, timeout=120)
    assert proc.returncode == 0, out
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, stopped + 3))
    # both processes resumed at their own place in the plan: the losses continue the uninterrupted run's
    assert main(["train", *args, f"output={tmp_path / 'ref'}", f"max_steps={stopped + 2}", "grad_accum=2"]) == 0
    ref = _metrics(tmp_path / "ref")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=1e-5)


def _launch(train_args: list[str], launcher: str = "torchrun") -> subprocess.Popen:
    """`tunelab train` as 2 CPU processes under torchrun or `accelerate launch`, on a free port."""
    if launcher == "torchrun":
        start = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:  # without an accelerate config, --multi_gpu is what selects its torch.distributed launcher
        start = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    cmd = [sys.executable, "-m", *start, "-m", "tunelab", "train", *train_args]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 processes on 2 cores
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group, so a timeout can kill the workers too


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """The launcher's output once it exits; on timeout kill it and its workers and fail."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"timed out after {timeout}s:\n{proc.communicate()[0]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(launcher: int) -> list[int]:
    """Pids of the `tunelab train` processes torchrun started (Linux /proc)."""
    children = [int(c) for task in Path(f"/proc/{launcher}/task").iterdir()
                for c in (task / "children").read_text().split()]
    return [c for c in children if b"tunelab" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_same_adapter(ddp: Path, one: Path, model: Path) -> None:
    """Equal trained weights, and our engine serves the DDP adapter like the one-process one."""
    import torch
    from safetensors.torch import load_file

    from tunelab.engine import LLM, SamplingParams

    a, b = load_file(str(ddp / "adapter_model.safetensors")), load_file(str(one / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
    assert any(name.endswith("lora_B.weight") and a[name].abs().sum() > 0 for name in a)  # B starts at 0
    llm = LLM(model, dtype="fp32", adapters={"ddp": ddp, "one": one}, max_model_len=128)
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    conv = [{"role": "user", "content": "who are you?"}]
    assert llm.chat(conv, params, adapter="ddp")[0].outputs[0].token_ids == \
        llm.chat(conv, params, adapter="one")[0].outputs[0].token_ids


def test_a_launcher_forwarding_the_same_signal_is_one_stop_request():
    import threading

    from tunelab.train.signals import stop_on_signals

    stop = threading.Event()
    with stop_on_signals(stop, echo_s=5.0):  # terminal Ctrl-C, then torchrun forwarding it
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.is_set()
    stop.clear()
    with pytest.raises(KeyboardInterrupt), stop_on_signals(stop, echo_s=0.0):  # one process: 2nd = now
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
