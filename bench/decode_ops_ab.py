"""The fused decode ops (models/decode_ops.py) on vs off: decode step time and greedy identity.

Loads the default model once per weight format and, interleaved in one process, times the decode
steps of `streams` greedy sequences with `decode_ops.enabled` on and off (step time = (time for
1 + N tokens - time for 1 token) / N: the prompt's prefill cancels), then checks that both sides
generate the same 256 tokens per stream.

    OMP_NUM_THREADS=1 python bench/decode_ops_ab.py [--quantize none,int4-all] [--streams 1,8]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

from tunelab.engine import LLM, SamplingParams
from tunelab.models import decode_ops
from tunelab.store.resolve import resolve_model

PROMPT = list(range(2, 60))


def prompts(streams: int, shift: int) -> list[list[int]]:
    return [[t + i + shift for t in PROMPT] for i in range(streams)]


def gen_s(llm: LLM, streams: int, tokens: int, shift: int) -> float:
    sp = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    t = time.perf_counter()
    llm.generate(prompts(streams, shift), sp, use_tqdm=False)
    return time.perf_counter() - t


def step_ms(llm: LLM, streams: int, fused: bool, steps: int, shift: int) -> float:
    """Decode step time in ms, prefill subtracted."""
    decode_ops.enabled = fused
    return (gen_s(llm, streams, 1 + steps, shift) - gen_s(llm, streams, 1, shift)) / steps * 1e3


def tokens(llm: LLM, streams: int, fused: bool) -> list[list[int]]:
    decode_ops.enabled = fused
    sp = SamplingParams(max_tokens=256, temperature=0, ignore_eos=True)
    return [o.token_ids for o in llm.generate(prompts(streams, 3), sp, use_tqdm=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantize", default="int4-all,none")
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=48)
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch threads {torch.get_num_threads()}")
    for q in args.quantize.split(","):
        llm = LLM(resolve_model(None), dtype="bf16", max_model_len=2048, quantize=None if q == "none" else q,
                  enable_prefix_caching=False)  # a cached prefix would change the rows each side computes
        for n in map(int, args.streams.split(",")):
            gen_s(llm, n, 8, 0)  # warm both sides
            times = {True: [], False: []}
            for r in range(args.rounds):
                for fused in ((True, False) if r % 2 == 0 else (False, True)):
                    times[fused].append(step_ms(llm, n, fused, args.steps, r + 1))
            on, off = min(times[True]), min(times[False])
            same = tokens(llm, n, True) == tokens(llm, n, False)
            print(f"{q:9s} streams {n}: step ms fused {on:.2f} torch {off:.2f} -> {off / on:.2f}x "
                  f"(all: on {[round(t, 1) for t in times[True]]} off {[round(t, 1) for t in times[False]]}); "
                  f"256 greedy tokens x {n} identical: {same}")
        del llm
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
