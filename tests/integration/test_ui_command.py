"""`tunelab ui MODEL`: starts the server with the web UI and prints the URL to open."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx


def test_tunelab_ui_prints_a_working_url_and_stops_on_ctrl_c(tiny_models, tmp_path):
    cmd = [sys.executable, "-m", "tunelab", "ui", str(tiny_models["qwen2"]), "--port", "0",
           "--api-key", "k", "--set", f"runs_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/ui/", line)
        assert url, line
        base = url.group(1)
        page = httpx.get(base + "/ui/", timeout=10)
        assert page.status_code == 200 and "tunelab" in page.text
        assert httpx.get(base + "/ui/api/runs", timeout=10).status_code == 401
        runs = httpx.get(base + "/ui/api/runs", headers={"Authorization": "Bearer k"}, timeout=10).json()
        assert runs["runs"] == [] and runs["runs_dir"] == str(tmp_path)
        loading = httpx.get(base + "/health", timeout=10).status_code == 503
        proc.send_signal(signal.SIGINT)  # most often while the model still loads, which must not delay the exit
        assert proc.wait(60) == 0, f"model loading at Ctrl-C: {loading}"
        rest = proc.stdout.read()
        assert "stopping" in rest and "Traceback" not in rest and "shutdown failed" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
