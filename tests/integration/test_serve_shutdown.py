"""SIGTERM with long requests running: at the grace deadline every open request ends properly
(streams with a final chunk and [DONE] / done: true, the rest with a 503), the log holds no
traceback, and the process exits 0, also when idle (issue 13, item 1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

GRACE_S = 2.0
LONG = {"max_tokens": 30000, "temperature": 0}  # far more than fits in the grace period


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`tunelab serve` on a free port; returns once /health says ready."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tunelab", "serve", str(model), "--port", str(port), "--name", "tiny",
           "--set", f"shutdown_timeout_s={GRACE_S}", "--set", "max_tokens_limit=32000",
           "--set", "reasoning=off"]  # the tiny model's greedy reply is all newlines, which the parser holds
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, stdout=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    lines = [line for line in log.read_text().splitlines() if '"/health"' not in line]
    raise AssertionError("server did not start:\n" + "\n".join(lines[-30:]))


class Client(threading.Thread):
    """Runs one request in a thread; `started` once it has produced output (or was sent)."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work, self.started = work, threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work(self.started)
        except BaseException as err:  # noqa: BLE001 - checked by the test
            self.error = err


def _openai_chat_stream(url):
    def work(started):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        chunks = []
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}],
                                                stream=True, extra_body={"ignore_eos": True}, **LONG)
        for chunk in stream:
            chunks.append(chunk)
            started.set()
        return [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    return work


def _openai_completion_stream(url):
    def work(started):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        reasons = []
        for chunk in client.completions.create(model="tiny", prompt="go", stream=True,
                                               extra_body={"ignore_eos": True}, **LONG):
            reasons.append(chunk.choices[0].finish_reason)
            started.set()
        return reasons[-1]
    return work


def _openai_whole(url):
    def work(started):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        started.set()
        try:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}],
                                           extra_body={"ignore_eos": True}, **LONG)
        except openai.APIStatusError as err:
            return err.status_code, err.body
        return 200, None
    return work


def _raw_sse(url):
    """The bytes on the wire: the stream must end with `data: [DONE]`."""
    def work(started):
        body = {"model": "tiny", "prompt": "go", "stream": True, "ignore_eos": True, **LONG}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    started.set()
        return lines[-1]
    return work


def _ollama_chat_stream(url):
    def work(started):
        parts = []
        stream = ollama.Client(host=url).chat(model="tiny", messages=[{"role": "user", "content": "go"}],
                                              stream=True, options={"num_predict": 30000, "temperature": 0})
        for part in stream:
            parts.append(part)
            started.set()
        return parts[-1].done, parts[-1].done_reason
    return work


@pytest.fixture(scope="module")
def long_context_model(tiny_models, tmp_path_factory) -> Path:
    """The tiny llama with a 32k context (RoPE has no learned positions), so replies can outlast
    the grace period."""
    out = tmp_path_factory.mktemp("long") / "tiny-long"
    shutil.copytree(tiny_models["llama"], out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    return out


def test_sigterm_ends_every_open_request_properly(long_context_model, tmp_path):
    log = tmp_path / "serve.log"
    proc, url = _serve(long_context_model, log)
    try:
        clients = {name: Client(make(url)) for name, make in [
            ("chat_stream", _openai_chat_stream), ("completion_stream", _openai_completion_stream),
            ("whole", _openai_whole), ("raw_sse", _raw_sse), ("ollama_stream", _ollama_chat_stream)]}
        for c in clients.values():
            c.start()
        for name, c in clients.items():
            assert c.started.wait(60), f"{name} produced nothing: {c.error!r}"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(GRACE_S + 30)
        for c in clients.values():
            c.join(10)
        errors = {name: repr(c.error) for name, c in clients.items() if c.error is not None}
        assert not errors, errors
        assert time.monotonic() - start < GRACE_S + 10
        assert clients["chat_stream"].result == "abort"
        assert clients["completion_stream"].result == "abort"
        assert clients["raw_sse"].result == "data: [DONE]"
        assert clients["ollama_stream"].result == (True, "abort")
        status, body = clients["whole"].result
        assert status == 503 and body["code"] == "shutting_down", body
        assert code == 0
        text = log.read_text()
        assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_when_idle_exits_0(tiny_models, tmp_path):
    log = tmp_path / "serve.log"
    proc, _ = _serve(tiny_models["llama"], log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "Traceback" not in log.read_text()
