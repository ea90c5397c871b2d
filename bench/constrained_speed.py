"""The cost of constrained decoding (a JSON-schema token mask per sequence) in the tunelab engine.

    python bench/constrained_speed.py                  # CPU: the default Gemma 3 270M
    python bench/constrained_speed.py --model PATH --streams 16 --new-tokens 128

(a) sampler only: ms per step of `sample()` on (B, V) logits with and without a JSON-schema
    constraint on every row (the mask's own cost, model excluded), B = 1 and --streams.
(b) decode, like for like: the same prompts decode exactly --new-tokens tokens each, free
    (`ignore_eos`) and constrained to a JSON schema that cannot close sooner (an array of
    objects with minItems = --new-tokens, so every stream runs to max_tokens on both sides and
    the batch stays full). Decode tok/s = tokens of the steps after every stream's first token
    (prefill excluded) / those steps' time, median of --repeats runs per side (alternating
    free and constrained). Each line ends with constrained/free and the cost against the 10% target.
    On a shared machine wall time mostly measures the neighbours, so (a) and (b) also give CPU
    time (thread / process CPU seconds; with --threads 1 that is what one quiet core would take).
(c) llguidance's tokenizer build, once per served tokenizer: ours against `llguidance.hf.from_tokenizer`.
"""

from __future__ import annotations

import argparse
import os
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

ITEM = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16}, "score": {"type": "integer"}},
        "required": ["name", "score"], "additionalProperties": False}


def schema(min_items: int) -> dict:
    """Rows of {name, score}: at least `min_items` of them, so a reply cannot close in fewer tokens."""
    return {"type": "object", "properties": {"rows": {"type": "array", "items": ITEM, "minItems": min_items}},
            "required": ["rows"], "additionalProperties": False}


def main() -> None:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(args.model, dtype=args.dtype, max_model_len=1024)
    print(f"model: {llm.engine.model_dir}  vocab: {llm.engine.model.spec.vocab_size}  "
          f"threads: {torch.get_num_threads()}  load average: {_load()}")
    if not args.skip_build:
        ours, theirs = _build_seconds(llm)
        print(f"(c) llguidance tokenizer build: ours {ours:.2f} s, llguidance.hf.from_tokenizer {theirs:.2f} s")
    for batch in (1, args.streams):
        (free, free_cpu), (con, con_cpu) = _sampler_ms(llm, batch, args.steps)
        print(f"(a) sampler, B={batch}: free {free:.2f} ms/step, constrained {con:.2f} ms/step "
              f"(+{(con - free) / batch:.3f} ms per row); CPU free {free_cpu:.2f} ms, constrained "
              f"{con_cpu:.2f} ms (+{(con_cpu - free_cpu) / batch:.3f} ms per row)")
    print(f"(b) method: {args.new_tokens} tokens per stream on both sides (free: ignore_eos; constrained: "
          f"JSON schema with minItems {args.new_tokens}), decode steps only, median of {args.repeats} runs")
    so = StructuredOutputsParams(json=schema(args.new_tokens))
    for streams in () if args.skip_decode else (1, args.streams):
        runs: dict[str, list[tuple[float, float, float]]] = {"free": [], "constrained": []}
        order = ["free", "constrained"]
        for r in range(args.repeats):
            for side in order if r % 2 == 0 else order[::-1]:
                runs[side].append(_decode(llm, streams, args.new_tokens, so if side == "constrained" else None))
        (free, free_ms, free_cpu), (con, con_ms, con_cpu) = _median(runs["free"]), _median(runs["constrained"])
        print(f"(b) decode, {streams} stream(s): free {free:.1f} tok/s ({free_ms:.1f} ms/step), constrained "
              f"{con:.1f} tok/s ({con_ms:.1f} ms/step); constrained/free {con / free:.3f}, "
              f"cost {100 * (1 - con / free):.1f}% (target <= 10%)  runs free {_fmt(runs['free'])} "
              f"constrained {_fmt(runs['constrained'])}")
        print(f"(b) decode, {streams} stream(s), per CPU second: free {free_cpu:.1f} tok/s, constrained "
              f"{con_cpu:.1f} tok/s; constrained/free {con_cpu / free_cpu:.3f}, "
              f"cost {100 * (1 - con_cpu / free_cpu):.1f}%")
    print(f"load average after: {_load()}")


def _load() -> str:
    """The machine's 1/5/15-minute load (timings on a busy machine are labelled with it)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(column) for column in zip(*runs))


def _fmt(runs: list[tuple[float, ...]]) -> str:
    return "[" + ", ".join(f"{r[0]:.1f}" for r in runs) + "]"


def _build_seconds(llm: LLM) -> tuple[float, float]:
    """Seconds to build llguidance's tokenizer our way and llguidance.hf's way (fresh tokenizers)."""
    import llguidance.hf
    from transformers import AutoTokenizer

    from tunelab.engine.constraints import _lltokenizer

    vocab = llm.engine.model.spec.vocab_size
    times = []
    for build in (lambda t: _lltokenizer(t, vocab), lambda t: llguidance.hf.from_tokenizer(t, n_vocab=vocab)):
        tok = AutoTokenizer.from_pretrained(llm.engine.model_dir)
        start = time.perf_counter()
        build(tok)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def _sampler_ms(llm: LLM, batch: int, steps: int) -> list[tuple[float, float]]:
    """Median wall and thread-CPU ms of one sample() call on random (B, V) logits, free and with a
    constraint per row."""
    vocab = llm.engine.model.spec.vocab_size
    tok = llm.engine.tokenizer
    so = StructuredOutputsParams(json=schema(10_000))
    results = []
    for structured in (None, so):
        seqs = [_seq(tok, structured, i) for i in range(batch)]
        times, cpu = [], []
        for _ in range(steps):
            logits = torch.randn(batch, vocab)
            start, start_cpu = time.perf_counter(), time.thread_time()
            ids = sample(logits, seqs).token_ids
            times.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
            for seq, t in zip(seqs, ids.tolist()):
                seq.append_token(t)
        # the first step compiles the grammar
        results.append((1000 * statistics.median(times[1:]), 1000 * statistics.median(cpu[1:])))
    return results


def _seq(tokenizer, structured, i: int) -> Sequence:
    from tunelab.engine.detokenizer import IncrementalDetokenizer

    params = SamplingParams(max_tokens=10_000, temperature=1.0, seed=i, structured_outputs=structured)
    return Sequence([1, 2, 3], params, detokenizer=IncrementalDetokenizer(tokenizer, [1, 2, 3]))


def _decode(llm: LLM, streams: int, new_tokens: int, so: StructuredOutputsParams | None) -> tuple[float, ...]:
    """Decode tok/s, median ms per decode step and decode tokens per process-CPU second of `streams`
    requests of exactly `new_tokens` tokens."""
    engine = llm.engine
    _run(engine, 1, 4, so)  # warm: compile the grammar, build llguidance's tokenizer, fill caches
    seqs = _add(engine, streams, new_tokens, so)
    while any(not s.output_ids for s in seqs):  # prefill (chunks) until every stream has its first token
        engine.step()
    first = sum(len(s.output_ids) for s in seqs)
    steps, start_cpu = [], time.process_time()
    while engine.has_unfinished():
        start = time.perf_counter()
        engine.step()
        steps.append(time.perf_counter() - start)
    cpu = time.process_time() - start_cpu
    counts = [len(s.output_ids) for s in seqs]
    if counts != [new_tokens] * streams:
        raise SystemExit(f"not like for like: streams generated {counts} tokens, wanted {new_tokens} each")
    decoded = sum(counts) - first
    return decoded / sum(steps), 1000 * statistics.median(steps), decoded / cpu


def _run(engine, streams: int, new_tokens: int, so) -> None:
    _add(engine, streams, new_tokens, so)
    while engine.has_unfinished():
        engine.step()


def _add(engine, streams: int, new_tokens: int, so) -> list[Sequence]:
    tok = engine.tokenizer
    seqs = []
    for i in range(streams):
        params = SamplingParams(max_tokens=new_tokens, temperature=1.0, seed=i, ignore_eos=so is None,
                                structured_outputs=so)
        prompt = tok.encode(f"List people and their scores as JSON rows, topic {i}:")
        seqs += engine.add_request(f"{'c' if so else 'f'}{time.monotonic_ns()}-{i}", prompt, params)
    return seqs


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name or path (default: the embedded Gemma 3 270M)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64, help="tokens each stream decodes, both sides")
    p.add_argument("--repeats", type=int, default=2, help="decode runs per side, alternating free/constrained")
    p.add_argument("--steps", type=int, default=30, help="sampler steps timed in (a)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-decode", action="store_true", help="no (b)")
    p.add_argument("--skip-build", action="store_true", help="no (c)")
    return p.parse_args()


if __name__ == "__main__":
    main()
