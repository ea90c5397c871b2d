"""How the engine's cost grows with the work, on the default model, and where it grows too fast.

    OMP_NUM_THREADS=2 python bench/cost_curves.py [--max-len 8192] [--lengths 128,512,2048,8192]
        [--contexts 128,1024,4096,8192] [--concurrency 1,2,4,8,16,32,64] [--new-tokens 32]

Four curves, one process run (random prompts, never a prefix-cache hit unless stated):
- prefill time against prompt length (one request, one output token);
- decode inter-token latency against context length (one stream);
- output throughput against concurrency (streams of a 64-token prompt);
- process memory (RSS) against cached tokens (prompts left in the prefix cache).
Each row gets the log-log slope from the previous point; a FLAG marks a step that grows faster
than the work should: prefill slope > 1.5 (attention is quadratic, but small next to the linears
at these lengths), decode ITL slope > 1 (a step reads the context once: at most linear),
throughput that falls as concurrency rises, and memory that grows past the preallocated KV pool.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RNG = random.Random(0)


def _ids(n: int) -> list[int]:
    return [RNG.randrange(1000, 200000) for _ in range(n)]


def _timed(llm, prompts, max_tokens: int) -> tuple[float, int]:
    from tunelab.engine import SamplingParams

    p = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(prompts, p, use_tqdm=False)
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _slope(prev: tuple[float, float] | None, x: float, y: float) -> float | None:
    if prev is None or prev[1] <= 0 or y <= 0 or x == prev[0]:
        return None
    return math.log(y / prev[1]) / math.log(x / prev[0])


def _row(cells: list, slope: float | None, limit: float | None) -> str:
    flag = "FLAG" if slope is not None and limit is not None and slope > limit else ""
    s = "-" if slope is None else f"{slope:.2f}"
    return "| " + " | ".join(str(c) for c in cells) + f" | {s} | {flag} |"


def prefill(llm, lengths: list[int]) -> None:
    print("\n| prompt tokens | prefill ms | ms / token | slope | flag |\n|---|---|---|---|---|")
    prev = None
    for n in lengths:
        secs = min(_timed(llm, [_ids(n)], 1)[0] for _ in range(2))
        print(_row([n, f"{secs * 1e3:.0f}", f"{secs * 1e3 / n:.2f}"], _slope(prev, n, secs), 1.5), flush=True)
        prev = (n, secs)


def _itl(llm, ids: list[int], new_tokens: int) -> float:
    """Median decode step time of one stream over `ids`, timing the engine's steps directly."""
    from tunelab.engine import SamplingParams

    eng = llm.engine
    eng.add_request(("itl", len(ids)), ids, SamplingParams(max_tokens=new_tokens + 1, temperature=0,
                                                            ignore_eos=True))
    times = []
    while eng.has_unfinished():
        start = time.perf_counter()
        eng.step()
        times.append(time.perf_counter() - start)
    decode_steps = sorted(times[-new_tokens:])  # the prefill chunks come first
    return decode_steps[len(decode_steps) // 2]


def decode(llm, contexts: list[int], new_tokens: int) -> None:
    print("\n| context tokens | ITL ms (median step) | slope | flag |\n|---|---|---|---|")
    prev = None
    for n in contexts:
        itl = _itl(llm, _ids(n), new_tokens)
        print(_row([n, f"{itl * 1e3:.1f}"], _slope(prev, n, itl), 1.0), flush=True)
        prev = (n, itl)


def throughput(llm, levels: list[int], new_tokens: int) -> None:
    print("\n| streams | output tok/s | x 1 stream | flag |\n|---|---|---|---|")
    base = None
    best = 0.0
    for c in levels:
        secs, toks = _timed(llm, [_ids(64) for _ in range(c)], new_tokens)
        rate = toks / secs
        base = base or rate
        flag = "FLAG" if rate < 0.9 * best else ""  # more streams should never mean fewer tokens
        best = max(best, rate)
        print(f"| {c} | {rate:.1f} | {rate / base:.2f}x | {flag} |", flush=True)


def memory(llm, steps: list[int]) -> None:
    from tunelab.engine.kv_cache import bytes_per_block

    eng = llm.engine
    pool = bytes_per_block(eng.model.spec, eng.config.block_size, eng.dtype, eng.config.kv_cache_dtype)
    pool_mb = pool * (eng.config.num_blocks + 1) / 2**20
    print(f"\nKV pool: {eng.config.num_blocks} blocks x {eng.config.block_size} tokens, {pool_mb:.0f} MB, "
          f"preallocated; {pool / eng.config.block_size / 1024:.1f} KB per cached token")
    print("| cached tokens | RSS MB | growth MB | flag |\n|---|---|---|---|")
    start, cached = _rss_mb(), 0
    for n in steps:
        while cached < n:
            _timed(llm, [_ids(min(512, n - cached))], 1)
            cached += min(512, n - cached)
        grown = _rss_mb() - start
        flag = "FLAG" if grown > 0.25 * pool_mb + 64 else ""  # the pool is allocated once, up front
        print(f"| {cached} | {_rss_mb():.0f} | {grown:+.0f} | {flag} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-len", type=int, default=8192, help="max_model_len (the context limit measured)")
    ap.add_argument("--lengths", default="128,512,2048,8192", help="prompt lengths for prefill")
    ap.add_argument("--contexts", default="128,1024,4096,8192", help="context lengths for decode ITL")
    ap.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="stream counts for throughput")
    ap.add_argument("--new-tokens", type=int, default=32, help="decode tokens per point")
    ap.add_argument("--cached", default="1024,4096,8192", help="cached token counts for memory")
    args = ap.parse_args()
    import torch

    from tunelab.engine import LLM

    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    llm = LLM(None, dtype="bf16", max_model_len=args.max_len)
    print(f"default model, bf16, threads {torch.get_num_threads()}, max_model_len {args.max_len}, "
          f"max_num_batched_tokens {llm.engine.config.max_num_batched_tokens}")
    prefill(llm, [n for n in ints(args.lengths) if n < args.max_len])
    decode(llm, [n for n in ints(args.contexts) if n + args.new_tokens < args.max_len], args.new_tokens)
    throughput(llm, ints(args.concurrency), args.new_tokens)
    memory(llm, ints(args.cached))


if __name__ == "__main__":
    main()
