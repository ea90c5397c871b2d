"""Decode attention per query head (torch's GQA call, the default) against the opt-in rows form
(`attention.ROWS_DECODE`: a KV head's query heads as its query rows), interleaved in one process.

Prints one-stream tok/s (256 new tokens, greedy) and the tok/s of a batch of mixed requests for
both, and where their greedy tokens part (the rows form sums in another order).

    OMP_NUM_THREADS=1 python bench/decode_rows_ab.py [--rounds 2] [--requests 16]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunelab.engine import LLM, SamplingParams  # noqa: E402
from tunelab.models import attention  # noqa: E402

MODES = {"per-head": False, "rows": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    from tunelab.store.resolve import resolve_model

    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    llm = LLM(resolve_model(args.model), dtype="bf16", max_model_len=2048)
    text = "The history of the printing press begins in the fifteenth century, when " * 8
    prompt = llm.tokenizer.encode(text)[:32]  # as bench/engine_speed.py's one stream
    rng = random.Random(0)
    story = llm.tokenizer.encode("Write a short story about a lighthouse keeper and a storm. " * 40)
    reqs = [(story[:rng.randint(16, 300)], rng.randint(16, 160)) for _ in range(args.requests)]
    llm.generate([prompt], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True), use_tqdm=False)
    one: dict[str, list[float]] = {m: [] for m in MODES}
    many: dict[str, list[float]] = {m: [] for m in MODES}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(args.rounds):
        for mode, flag in MODES.items():
            attention.ROWS_DECODE = flag
            rate, out = _run(llm, [(prompt, args.new_tokens)])
            one[mode].append(rate)
            rate, outs = _run(llm, reqs)
            many[mode].append(rate)
            tokens[mode] = out + outs
            print(f"{mode}: one stream {one[mode][-1]:.2f} tok/s, {len(reqs)} requests {rate:.1f} tok/s", flush=True)
    attention.ROWS_DECODE = False
    for mode in MODES:
        print(f"{mode}: best one stream {max(one[mode]):.2f} tok/s ({1000 / max(one[mode]):.1f} ms/token), "
              f"best batch {max(many[mode]):.1f} tok/s")
    parts = [_first_difference(a, b) for a, b in zip(tokens["per-head"], tokens["rows"])]
    print(f"greedy tokens identical in {parts.count(None)} of {len(parts)} requests; "
          f"first differences at {[p for p in parts if p is not None]}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def _run(llm: LLM, reqs) -> tuple[float, list[list[int]]]:
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for _, n in reqs]
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in reqs], params, use_tqdm=False)
    tokens = [o.outputs[0].token_ids for o in outs]
    return sum(len(t) for t in tokens) / (time.perf_counter() - start), tokens


def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


if __name__ == "__main__":
    main()
