"""Prometheus text output and the constant-time API key check."""

from tunelab.serve.auth import bearer_token, key_matches
from tunelab.serve.metrics import Histogram, ServerMetrics, backend_gauges


def test_histogram_buckets_are_cumulative():
    h = Histogram("x_seconds", "doc", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.7, 3.0):
        h.observe(v)
    lines = h.render()
    assert 'x_seconds_bucket{le="0.1"} 1' in lines
    assert 'x_seconds_bucket{le="1.0"} 3' in lines
    assert 'x_seconds_bucket{le="+Inf"} 4' in lines
    assert "x_seconds_count 4" in lines and "x_seconds_sum 4.25" in lines


def test_server_metrics_render_counts_and_gauges():
    m = ServerMetrics()
    m.observe_request(0.2, [0.01, 0.02], 0.5, prompt_tokens=7, gen_tokens=3, reason="stop")
    m.observe_request(None, [], 0.1, prompt_tokens=2, gen_tokens=0, reason="abort")
    text = m.render(backend_gauges({"running": 2, "waiting": 1, "kv_usage": 0.25, "preemptions": 4, "steps": 9}))
    assert "tunelab_num_requests_running 2" in text
    assert "tunelab_engine_steps_total 9" in text
    assert "tunelab_num_requests_waiting 1" in text
    assert "tunelab_kv_cache_usage_perc 0.25" in text
    assert "tunelab_num_preemptions_total 4" in text
    assert "tunelab_prompt_tokens_total 9" in text
    assert "tunelab_generation_tokens_total 3" in text
    assert "tunelab_time_to_first_token_seconds_count 1" in text
    assert "tunelab_inter_token_latency_seconds_count 2" in text
    assert "tunelab_e2e_request_latency_seconds_count 2" in text
    assert 'tunelab_request_success_total{finished_reason="abort"} 1' in text
    for line in text.splitlines():  # every sample line is `name[{labels}] number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_api_key_check():
    assert key_matches(None, None)
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cret", "s3cre")
    assert not key_matches("s3cret", None)
    assert not key_matches("s3cret", "")
    assert key_matches("ключ", "ключ")  # non-ASCII keys compare as UTF-8 bytes


def test_bearer_token_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None, "xyz") == "xyz"
