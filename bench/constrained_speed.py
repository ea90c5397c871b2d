"""The cost of constrained decoding (a JSON-schema token mask per sequence) in the tunelab engine.

    python bench/constrained_speed.py                  # CPU: the default Gemma 3 270M
    python bench/constrained_speed.py --model PATH --streams 16 --new-tokens 128

(a) sampler only: ms per step of `sample()` on (B, V) logits with and without a JSON-schema
    constraint on every row (the mask's own cost, model excluded), B = 1 and --streams.
(b) end to end: decode tok/s of one stream and of --streams streams, free vs constrained to a
    JSON schema whose replies run long (an array of strings), same prompts and token budget;
    each line ends with the ratio constrained/free and the cost (1 - ratio) against the 10% target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunelab.engine import LLM, SamplingParams  # noqa: E402
from tunelab.engine.sampling import sample  # noqa: E402
from tunelab.engine.sequence import Sequence  # noqa: E402
from tunelab.engine.structured import StructuredOutputsParams  # noqa: E402

SCHEMA = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}}},
          "required": ["notes"]}


def main() -> None:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(args.model, dtype=args.dtype, max_model_len=1024)
    print(f"model: {llm.engine.model_dir}  vocab: {llm.engine.model.spec.vocab_size}  "
          f"threads: {torch.get_num_threads()}  load average: {_load()}")
    for batch in (1, args.streams):
        free, constrained = _sampler_ms(llm, batch, args.steps)
        print(f"(a) sampler, B={batch}: free {free:.2f} ms/step, constrained {constrained:.2f} ms/step "
              f"(+{constrained - free:.2f} ms, +{(constrained - free) / batch:.3f} ms per row)")
    for streams in () if args.skip_decode else (1, args.streams):
        (free, n_free), (constrained, n_con) = (_decode(llm, streams, args.new_tokens, None),
                                                _decode(llm, streams, args.new_tokens, SCHEMA))
        ratio = constrained / free
        print(f"(b) decode, {streams} stream(s): free {free:.1f} tok/s ({n_free} tokens), constrained "
              f"{constrained:.1f} tok/s ({n_con} tokens); constrained/free {ratio:.3f}, "
              f"cost {100 * (1 - ratio):.1f}% (target <= 10%)")
    print(f"load average after: {_load()}")


def _load() -> str:
    """The machine's 1/5/15-minute load (timings on a busy machine are labelled with it)."""
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sampler_ms(llm: LLM, batch: int, steps: int) -> tuple[float, float]:
    """Median ms of one sample() call on random (B, V) logits, free and with a constraint per row."""
    vocab = llm.engine.model.spec.vocab_size
    tok = llm.engine.tokenizer
    so = StructuredOutputsParams(json=SCHEMA)
    results = []
    for structured in (None, so):
        seqs = [_seq(tok, structured, i) for i in range(batch)]
        times = []
        for _ in range(steps):
            logits = torch.randn(batch, vocab)
            start = time.perf_counter()
            ids = sample(logits, seqs).token_ids
            times.append(time.perf_counter() - start)
            for seq, t in zip(seqs, ids.tolist()):
                seq.append_token(t)
        results.append(1000 * statistics.median(times[1:]))  # the first step compiles the grammar
    return results[0], results[1]


def _seq(tokenizer, structured, i: int) -> Sequence:
    from tunelab.engine.detokenizer import IncrementalDetokenizer

    params = SamplingParams(max_tokens=10_000, temperature=1.0, seed=i, structured_outputs=structured)
    return Sequence([1, 2, 3], params, detokenizer=IncrementalDetokenizer(tokenizer, [1, 2, 3]))


def _decode(llm: LLM, streams: int, new_tokens: int, schema: dict | None) -> tuple[float, int]:
    """Generated tokens per second over `streams` concurrent requests, and how many were generated."""
    so = StructuredOutputsParams(json=schema) if schema else None
    params = [SamplingParams(max_tokens=new_tokens, temperature=1.0, seed=i, ignore_eos=so is None,
                             structured_outputs=so) for i in range(streams)]
    prompts = [f"Write notes about topic {i}." for i in range(streams)]
    llm.generate(prompts[:1], params[:1], use_tqdm=False)  # warm: compile the grammar, fill caches
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return tokens / elapsed, tokens


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name or path (default: the embedded Gemma 3 270M)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="sampler steps timed in (a)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-decode", action="store_true", help="only (a)")
    return p.parse_args()


if __name__ == "__main__":
    main()
