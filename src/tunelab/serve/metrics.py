"""Prometheus text-format metrics: counters, histograms, and gauges read from the backend.

Small and dependency-free on purpose: the exposition format is a few lines of text,
and the gauges (running, waiting, KV usage) are read from the backend at scrape time.
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative-bucket histogram of seconds."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.doc, self.buckets = name, doc, buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot is +Inf
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self) -> list[str]:
        """Exposition lines for this histogram."""
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {self.total}", f"{self.name}_count {self.count}"]
        return lines


class Counter:
    """Monotonic counter, optionally split by one label."""

    def __init__(self, name: str, doc: str, label: str | None = None):
        self.name, self.doc, self.label = name, doc, label
        self.values: dict[str, float] = {}

    def inc(self, amount: float = 1.0, label_value: str = "") -> None:
        """Add `amount` (to the series for `label_value`)."""
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def render(self) -> list[str]:
        """Exposition lines for this counter."""
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} counter"]
        for value, n in sorted((self.values or {"": 0.0}).items()):
            labels = f'{{{self.label}="{value}"}}' if self.label and value else ""
            lines.append(f"{self.name}{labels} {n:g}")
        return lines


class ServerMetrics:
    """All serving metrics; `render(stats)` produces the /metrics body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ttft = Histogram("tunelab_time_to_first_token_seconds", "Time to first generated token.")
        self.itl = Histogram("tunelab_inter_token_latency_seconds", "Time between generated tokens.")
        self.e2e = Histogram("tunelab_e2e_request_latency_seconds", "Request latency, arrival to finish.")
        self.prompt_tokens = Counter("tunelab_prompt_tokens_total", "Prompt tokens processed.")
        self.gen_tokens = Counter("tunelab_generation_tokens_total", "Tokens generated.")
        self.finished = Counter("tunelab_request_success_total", "Finished requests.", "finished_reason")
        self.errors = Counter("tunelab_request_errors_total", "Requests the backend rejected or failed.")
        self.http = Counter("tunelab_http_requests_total", "HTTP responses by status.", "status")

    def observe_request(self, ttft: float | None, itls: list[float], e2e: float,
                        prompt_tokens: int, gen_tokens: int, reason: str) -> None:
        """Record one generation; reason "error" counts it as rejected or failed."""
        with self._lock:
            if ttft is not None:
                self.ttft.observe(ttft)
            for gap in itls:
                self.itl.observe(gap)
            self.e2e.observe(e2e)
            self.prompt_tokens.inc(prompt_tokens)
            self.gen_tokens.inc(gen_tokens)
            if reason == "error":  # rejected or failed: not a finished request of any kind
                self.errors.inc(1)
            else:
                self.finished.inc(1, reason or "unknown")

    def observe_http(self, status: int) -> None:
        """Count one HTTP response."""
        with self._lock:
            self.http.inc(1, str(status))

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The Prometheus text body; `gauges` maps name -> (doc, value)."""
        lines: list[str] = []
        for name, (doc, value) in gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"  # backend-owned counters
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        with self._lock:
            for metric in (self.ttft, self.itl, self.e2e, self.prompt_tokens, self.gen_tokens,
                           self.finished, self.errors, self.http):
                lines += metric.render()
        return "\n".join(lines) + "\n"


def backend_gauges(stats: dict, preemptions_name: str = "tunelab_num_preemptions_total") -> dict:
    """Gauges from a backend's stats() dict (missing keys read as 0)."""
    get: Callable[[str], float] = lambda k: float(stats.get(k, 0) or 0)
    return {
        "tunelab_num_requests_running": ("Requests being generated.", get("running")),
        "tunelab_num_requests_waiting": ("Requests queued for the engine.", get("waiting")),
        "tunelab_kv_cache_usage_perc": ("Fraction of KV-cache blocks in use (0..1).", get("kv_usage")),
        preemptions_name: ("Sequences preempted for KV space since start.", get("preemptions")),
        "tunelab_engine_steps_total": ("Batches the engine has run since start.", get("steps")),
    }
