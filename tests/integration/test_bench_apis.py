"""`tunelab bench serve --api ...` against a real tunelab server: every wire format and embeddings."""

from __future__ import annotations

import asyncio

import pytest

from serve_util import API_KEY, start_server
from tunelab.bench.serve import BenchConfig, format_report, run_benchmark


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["qwen2"], served_name="tiny", api_key=API_KEY, reasoning="off")
    yield srv
    srv.stop()


@pytest.mark.parametrize("api, endpoint", [("openai", "chat"), ("responses", "chat"), ("anthropic", "chat"),
                                           ("ollama", "completions"), ("ollama", "chat")])
def test_each_api_streams_and_counts(server, api, endpoint):
    cfg = BenchConfig(url=server.url, api=api, endpoint=endpoint, api_key=API_KEY, requests=3, concurrency=2,
                      input_len=8, output_len=4)
    s = asyncio.run(run_benchmark(cfg))
    assert s["completed"] == 3 and s["errors"] == 0, s["error_samples"]
    assert s["prompt_tokens"] >= 3 * 8 and 3 <= s["output_tokens"] <= 12
    assert 0 < s["ttft_ms"]["p50"] <= s["e2e_ms"]["p50"] and f"api {api}" in format_report(s)


def test_embeddings_mode(server):
    cfg = BenchConfig(url=server.url, api="embeddings", batch=4, api_key=API_KEY, requests=3, input_len=8)
    s = asyncio.run(run_benchmark(cfg))
    assert s["completed"] == 3 and s["errors"] == 0, s["error_samples"]
    assert s["embeddings_per_s"] == pytest.approx(3 * 4 / s["duration_s"]) and s["prompt_tokens"] >= 3 * 4 * 8
    assert "embeddings/s (batch 4)" in format_report(s)
