"""What the first requests of a fresh engine pay, with and without `engine.warmup.warm_up`.

    OMP_NUM_THREADS=1 python bench/warmup.py [--rounds 3] [--streams 8] [--new-tokens 16]

Each variant runs in a fresh process (torch's kernel caches start empty): load the default
model, optionally warm up, then `--rounds` rounds of `--streams` concurrent requests with
random prompts of different lengths (never a prefix-cache hit). Prints process CPU seconds and
wall seconds per round: CPU time is what the first requests pay, and unlike wall time it
hardly moves with other load on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_variant(warm: bool, args) -> dict:
    """Rounds of CPU and wall seconds in this (fresh) process."""
    import random

    import torch

    from tunelab.engine import LLM, SamplingParams
    from tunelab.engine.warmup import warm_up

    llm = LLM(None, dtype="bf16", max_model_len=1024)
    engine, out = llm.engine, {"warm_up": None, "rounds": []}
    if warm:
        c0 = _cpu()
        rows, secs = warm_up(engine.model, engine.config.max_num_seqs, engine.dtype, engine.device)
        out["warm_up"] = {"rows": rows, "wall_s": secs, "cpu_s": _cpu() - c0}
    rng = random.Random(0)
    greedy = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    for _ in range(args.rounds):
        prompts = [[rng.randrange(1000, 200000) for _ in range(24 + 7 * i)] for i in range(args.streams)]
        c0, t0 = _cpu(), time.perf_counter()
        llm.generate(prompts, greedy, use_tqdm=False)
        out["rounds"].append({"cpu_s": _cpu() - c0, "wall_s": time.perf_counter() - t0})
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--variant", choices=("cold", "warm"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(one_variant(args.variant == "warm", args)))
        return
    passed = [f"--rounds={args.rounds}", f"--streams={args.streams}", f"--new-tokens={args.new_tokens}"]
    print("| variant | warm-up (rows, wall s, cpu s) | " + " | ".join(
        f"round {i + 1} cpu s / wall s" for i in range(args.rounds)) + " |")
    print("|---|---|" + "---|" * args.rounds)
    for variant in ("cold", "warm"):
        proc = subprocess.run([sys.executable, __file__, f"--variant={variant}", *passed],
                              capture_output=True, text=True, check=True)
        res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
        w = res["warm_up"]
        warm = f"{w['rows']}, {w['wall_s']:.2f}, {w['cpu_s']:.2f}" if w else "-"
        cells = " | ".join(f"{r['cpu_s']:.2f} / {r['wall_s']:.2f}" for r in res["rounds"])
        print(f"| {variant} | {warm} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
