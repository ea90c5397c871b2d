"""`tunelab bench serve` client errors: a clear message, not an httpx traceback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tunelab.bench.serve import BenchConfig, run_benchmark
from tunelab.errors import TunelabError


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = BenchConfig(url=f"http://127.0.0.1:{port}", requests=1, concurrency=1, timeout_s=5)
    with pytest.raises(TunelabError, match=f"cannot reach the server at http://127.0.0.1:{port}"):
        asyncio.run(run_benchmark(cfg))
