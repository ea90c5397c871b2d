"""`tunelab serve` as a process: health while loading, JSON access log, `tunelab bench serve`
against it, and graceful shutdown on SIGTERM that lets an in-flight stream finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    cmd = [sys.executable, "-m", "tunelab", "serve", str(tiny_models["qwen2"]), "--port", str(port),
           "--name", "tiny"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, stdout=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    url, seen = f"http://127.0.0.1:{port}", []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            seen.append(httpx.get(url + "/health").status_code)
        except httpx.TransportError:
            pass
        if seen and seen[-1] == 200:
            break
        time.sleep(0.05)
    yield proc, url, seen, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_health_goes_from_503_to_200(served):
    _, _, seen, _ = served
    assert seen[-1] == 200 and 503 in seen and set(seen) <= {200, 503}


def test_bench_serve_cli(served, tmp_path):
    _, url, _, _ = served
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "tunelab", "bench", "serve", "--url", url, "--concurrency", "2",
           "--requests", "6", "--input-len", "8", "--output-len", "5", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TTFT" in proc.stdout and "throughput" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["completed"] == 6 and summary["errors"] == 0
    assert summary["output_tokens"] == 30 and summary["prompt_tokens"] >= 6 * 8
    assert 0 < summary["ttft_ms"]["p50"] <= summary["e2e_ms"]["p50"]
    assert summary["itl_ms"]["mean"] > 0 and summary["output_token_throughput"] > 0


def test_bench_counts_errors(served):
    _, url, _, _ = served
    cmd = [sys.executable, "-m", "tunelab", "bench", "serve", "--url", url, "--model", "missing",
           "--requests", "2", "--output-len", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "2 errors" in proc.stdout and "HTTP 404" in proc.stdout


def test_sigterm_drains_in_flight_stream_then_exits(served):
    proc, url, _, log = served
    body = {"model": "tiny", "prompt": "long", "max_tokens": 300, "stream": True, "ignore_eos": True}
    events: list[str] = []
    started = threading.Event()

    def stream():
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    events.append(line)
                    started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(30)
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once drained
    assert events[-1] == "data: [DONE]"
    done = [json.loads(e[6:]) for e in events[:-1]]
    assert done[-1]["choices"][0]["finish_reason"] == "length"  # finished, not cut
    access = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert {"ts", "method", "path", "status", "ms", "client"} <= set(access[0])
    assert any(a["path"] == "/v1/completions" and a["status"] == 200 for a in access)
