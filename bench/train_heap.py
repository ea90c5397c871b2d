"""What a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_=131072) costs and saves in `tunelab train` on CPU.

    python bench/train_heap.py                                  # embedded Gemma 3 270M, lora 2 x 256
    python bench/train_heap.py --model DIR --keys method=full micro_batch_size=4 data.cutoff_len=384

Two sides, each a fresh process training the same synthetic examples (every position trained):
"fixed" runs with MALLOC_MMAP_THRESHOLD_=131072 (every block over 128 KiB in its own mapping,
returned to the OS when freed); "default" with glibc's dynamic threshold, as tunelab ships. The sides
alternate over --rounds (ABBA...) so load from other processes lands on both. Printed per side:
seconds per step after the first (warm-up) step and the peak resident set grown during `train()`
(VmHWM after, minus VmRSS before, the peak reset after the imports; Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model dir or store name (default: embedded Gemma 3 270M)")
    p.add_argument("--keys", nargs="*", default=["method=lora", "micro_batch_size=2", "data.cutoff_len=256"],
                   help="train keys (key=value)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    p.add_argument("--only", choices=["fixed", "default"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _status(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def run_side(args: argparse.Namespace) -> dict:
    """Train once in this process; seconds per timed step and the peak RSS growth in MiB."""
    import accelerate  # noqa: F401  (imported before the baseline, as train() would find them)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from tunelab.config import load_config
    from tunelab.data.tokenize import Example
    from tunelab.rundir import Run
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    keys = [f"model={args.model}", f"output={args.out}", f"max_steps={args.steps}", *args.keys]
    cfg = load_config(TrainConfig, None, keys)
    n, length = cfg.micro_batch_size * args.steps, cfg.data.cutoff_len
    examples = [Example(ids, list(ids)) for ids in ([(7 * i + 13 * j) % 500 for j in range(length)]
                                                     for i in range(n))]
    torch.manual_seed(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    result = train(cfg, examples=(examples, []))
    peak = _status("VmHWM") - before
    timed = Run(result.run_dir).metrics()[1:]
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in timed) / len(timed)
    return {"s_per_step": seconds, "peak_mib": peak / 2**20}


def side(args: argparse.Namespace, name: str, work: str, r: int) -> dict:
    argv = ["--model", args.model, "--steps", str(args.steps), "--keys", *args.keys]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if name == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"  # read by glibc at process start
    out = subprocess.run([sys.executable, __file__, *argv, "--only", name, "--out", f"{work}/{name}-{r}"],
                         capture_output=True, text=True, env=env)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"{name} run failed")
    return json.loads(lines[-1][7:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    results: dict[str, list[dict]] = {"fixed": [], "default": []}
    with tempfile.TemporaryDirectory(prefix="tunelab-heap-") as work:
        for r in range(args.rounds):
            for name in ("fixed", "default") if r % 2 == 0 else ("default", "fixed"):
                results[name].append(side(args, name, work, r))
                print(f"round {r + 1} {name}: {results[name][-1]['s_per_step']:.2f} s/step, "
                      f"peak +{results[name][-1]['peak_mib']:.1f} MiB", flush=True)
    mean = {k: sum(x["s_per_step"] for x in v) / len(v) for k, v in results.items()}
    peaks = {k: [round(x["peak_mib"], 1) for x in v] for k, v in results.items()}
    print(f"fixed {mean['fixed']:.2f} s/step, default {mean['default']:.2f} s/step: "
          f"fixed/default time x{mean['fixed'] / mean['default']:.3f}; peaks MiB fixed {peaks['fixed']}, "
          f"default {peaks['default']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
