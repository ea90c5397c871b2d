"""`tunelab serve --config serve.yaml` as a process: the YAML port is the one it binds (Bug 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_binds_the_yaml_port_and_name(tiny_models, tmp_path):
    port = _free_port()
    yaml = tmp_path / "serve.yaml"
    yaml.write_text(f"host: 127.0.0.1\nport: {port}\nserved_name: from-yaml\nmax_num_seqs: 2\naccess_log: false\n")
    cmd = [sys.executable, "-m", "tunelab", "serve", str(tiny_models["qwen2"]), "--config", str(yaml),
           "--set", "dtype=float32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()
        models = httpx.get(url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["from-yaml"]
    finally:
        proc.kill()
        proc.wait()
