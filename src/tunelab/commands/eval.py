"""`tunelab eval RUN [--data held_out.jsonl] [--prompts FILE]`: base vs tuned, into RUN/eval.json."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory or run name")
    parser.add_argument("--data", type=Path, default=None, help="held-out data (JSONL in any training format)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="prompts to generate from: JSONL (last assistant turn = reference) or .txt lines")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--num-generations", type=int, default=8, help="prompts shown side by side")
    parser.add_argument("--dtype", default="auto", help="engine dtype for the generations: auto, bf16, fp16, fp32")
    parser.add_argument("--forgetting-threshold", type=float, default=1.25,
                        help="warn when general-text perplexity grows by more than this factor")


def run(args: argparse.Namespace) -> int:
    from tunelab.eval.compare import EvalOptions
    from tunelab.eval.evaluate import run_eval

    options = EvalOptions(data=args.data, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                          num_generations=args.num_generations, forgetting_threshold=args.forgetting_threshold,
                          dtype=args.dtype)
    run_eval(args.run, options)
    return 0
