"""Training speed: tunelab vs a plain transformers Trainer + PEFT baseline, same model, data and LoRA.

    python bench/train_speed.py                       # CPU: embedded Gemma 3 270M, demo data
    python bench/train_speed.py --check-precision     # + tunelab at fp32: its loss curve next to auto's
    python bench/train_speed.py --arch llama3-8b      # GPU: Llama-3-8B shapes, random weights, seq 2048

The baseline is what most tutorials run: Trainer with a collator that pads each batch to its
longest example, full-vocabulary logits at every position. Each side runs in its own
subprocess so peak memory (process max RSS on CPU, max allocated on GPU) is its own, and the
sides alternate over --rounds (baseline, tunelab, tunelab, baseline, ...) so that load from other
processes on a shared machine lands on both.
Trained tokens/s counts real (non-padding) tokens per second of training steps. Each side runs
at its own defaults: tunelab at --precision (auto: bf16 base + fp32 LoRA on a bf16 CPU), the
Trainer at --baseline-precision (default: fp32 on CPU, as TrainingArguments has bf16 off; the
tunelab dtype on GPU, where tutorials set bf16=True). Both sides' loss curves are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# bf16-base loss vs the fp32 run, per step (docs/benchmarks.md: max 4.6% over the first 6 demo steps)
LOSS_TOLERANCE = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir or store name (default: embedded Gemma 3 270M)")
    p.add_argument("--arch", choices=["default", "llama3-8b"], default="default",
                   help="llama3-8b: random-weight Llama-3-8B shapes with synthetic data (GPU)")
    p.add_argument("--data", help="chat jsonl (default: the bundled demo dataset)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per side")
    p.add_argument("--micro-batch", type=int, default=4, help="examples per micro-batch (baseline batch size)")
    p.add_argument("--seq", type=int, default=512, help="cutoff length (2048 for llama3-8b)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--packing", action="store_true", help="tunelab side: packed rows instead of length buckets")
    p.add_argument("--precision", default="auto", help="tunelab side; auto = tunelab's rule (tunelab.dtypes)")
    p.add_argument("--baseline-precision", help="Trainer side; default fp32 on CPU, --precision's dtype on GPU")
    p.add_argument("--check-precision", action="store_true",
                   help="also train tunelab once at fp32 and compare its loss curve with --precision's")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternate the sides this many times (ABBA...) so load from other processes hits both")
    p.add_argument("--only", choices=["tunelab", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as work:
        prepare(args, Path(work))
        rounds = interleaved_rounds(__file__, argv or sys.argv[1:], work, args.rounds)
        reference = None
        if args.check_precision:  # same data order and LoRA init as the tunelab side, fp32 weights
            reference = side_subprocess(__file__, "tunelab", [*(argv or sys.argv[1:]), "--precision", "fp32",
                                                              "--round", str(args.rounds)], work)
    for r, results in enumerate(rounds):
        print(f"round {r + 1}")
        report(results)
    if len(rounds) > 1:
        print("all rounds (tokens over seconds, max peak)")
        report({side: _pool([res[side] for res in rounds]) for side in ("baseline", "tunelab")})
    print_curves(rounds[0], reference)
    return 0


def print_curves(results: dict, reference: dict | None) -> None:
    """Both sides' loss per optimizer step (first round), and tunelab's against its fp32 run."""
    for side in ("baseline", "tunelab"):
        r = results[side]
        print(f"loss {side} ({r.get('dtype', '?')}): " + " ".join(f"{x:.4f}" for x in r.get("losses", [])))
    if reference is None:
        return
    ours, ref = results["tunelab"]["losses"], reference["losses"]
    print("loss tunelab (fp32): " + " ".join(f"{x:.4f}" for x in ref))
    diffs = [(a - b) / abs(b) for a, b in zip(ours, ref)]
    print(f"tunelab {results['tunelab'].get('dtype')} vs fp32: per-step loss difference max "
          f"{100 * max(map(abs, diffs)):.2f}%, mean {100 * sum(diffs) / len(diffs):+.2f}% (tolerance {LOSS_TOLERANCE:.0%}); "
          f"fp32 {reference['tokens_per_s']:.1f} tok/s, peak {reference['peak_mem_mb']:.0f} MB")


def _pool(results: list[dict]) -> dict:
    """One side's rounds together: total tokens / total seconds, the largest peak."""
    tokens = sum(r["tokens"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return {"tokens_per_s": tokens / seconds, "peak_mem_mb": max(r["peak_mem_mb"] for r in results),
            "loaded_mb": min(r.get("loaded_mb") or 0.0 for r in results), "tokens": tokens, "seconds": seconds,
            "dtype": results[0].get("dtype")}


def interleaved_rounds(script: str, argv: list[str], work: str, rounds: int) -> list[dict]:
    """Run each side of `script` in its own process, `rounds` times, alternating which goes first
    (ABBA...) so load from other processes hits both; one {side: result} dict per round."""
    results = []
    for r in range(rounds):
        order = ("baseline", "tunelab") if r % 2 == 0 else ("tunelab", "baseline")
        results.append({side: side_subprocess(script, side, [*argv, "--round", str(r)], work) for side in order})
    return results


def side_subprocess(script: str, side: str, argv: list[str], work: str) -> dict:
    """One side of `script` in a fresh process (`--only SIDE`); its RESULT line, parsed."""
    out = subprocess.run([sys.executable, script, *argv, "--only", side, "--work", work],
                         capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"{side} run failed")
    return json.loads(line[-1][7:])


def prepare(args: argparse.Namespace, work: Path) -> None:
    """Write the model dir (random llama3-8b if asked) and the tokenized examples both sides use."""
    model_dir = _model_dir(args, work)
    examples = _examples(args, model_dir)
    (work / "setup.json").write_text(json.dumps({"model_dir": str(model_dir), "examples": examples}))


def _model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.arch == "llama3-8b":
        return _random_llama3_8b(work / "llama3-8b")
    from tunelab.store.resolve import resolve_model

    return resolve_model(args.model)


def _random_llama3_8b(out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                         rope_theta=500000.0, tie_word_embeddings=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(out)
    config.save_pretrained(out)
    return out


def _examples(args: argparse.Namespace, model_dir: Path) -> list[dict]:
    if args.arch == "llama3-8b":  # synthetic chat-like rows: 70% prompt, 30% answer, varied lengths
        rng = random.Random(0)
        rows = []
        for _ in range(args.steps * args.micro_batch * 2):
            n = rng.randint(args.seq // 4, args.seq)
            ids = [rng.randrange(1000, 120000) for _ in range(n)]
            cut = int(n * 0.7)
            rows.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
        return rows
    from transformers import AutoTokenizer

    from tunelab.data.config import DataConfig
    from tunelab.data.formats import read_datasets
    from tunelab.data.templates import ChatTemplate
    from tunelab.data.tokenize import build_examples

    if args.data is None:
        from tunelab.data.demo import demo_train_path

        args.data = str(demo_train_path())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    template = ChatTemplate.for_model(model_dir)
    rows = read_datasets([args.data]).rows
    examples, _ = build_examples(rows, template, tokenizer, DataConfig(cutoff_len=args.seq))
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


def run_side(args: argparse.Namespace) -> dict:
    """Train one side in this process and return its numbers."""
    setup = json.loads((Path(args.work) / "setup.json").read_text())
    fn = run_tunelab if args.only == "tunelab" else run_baseline
    return fn(args, Path(setup["model_dir"]), setup["examples"])


def run_tunelab(args: argparse.Namespace, model_dir: Path, rows: list[dict]) -> dict:
    import torch

    from tunelab.config import load_config
    from tunelab.data.tokenize import Example
    from tunelab.train.config import TrainConfig
    from tunelab.rundir import Run
    from tunelab.train.trainer import train

    examples = [Example(r["input_ids"], r["labels"]) for r in rows]
    cfg = load_config(TrainConfig, None, {
        "model": str(model_dir), "max_steps": args.steps, "micro_batch_size": args.micro_batch,
        "lora": {"rank": args.rank, "alpha": 2 * args.rank}, "data": {"cutoff_len": args.seq},
        "gradient_checkpointing": args.gradient_checkpointing, "precision": args.precision, "packing": args.packing,
        "output": str(Path(args.work) / f"tunelab-run-{args.round}"), "lr": 1e-4,
    })
    result = train(cfg, examples=(examples, []))
    metrics = Run(result.run_dir).metrics()
    timed = metrics[1:] or metrics  # the first step pays one-off warm-up costs; skipped on both sides
    tokens = sum(m["tokens"] for m in timed)
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in timed)
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    return {"tokens_per_s": tokens / seconds, "peak_mem_mb": max(m["peak_mem_mb"] for m in metrics),
            "steps": len(metrics), "tokens": tokens, "seconds": seconds, "dtype": cfg.dtype_name(kind),
            "losses": [m["loss"] for m in metrics]}


def run_baseline(args: argparse.Namespace, model_dir: Path, rows: list[dict]) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from tunelab.dtypes import resolve_dtype
    from tunelab.train.metrics import peak_mem_mb

    on_gpu = torch.cuda.is_available()
    dtype = resolve_dtype(args.baseline_precision or (args.precision if on_gpu else "fp32"),
                          "cuda" if on_gpu else "cpu", training=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir)) if args.arch == "default" else None
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    loaded_mb = _rss_mb()  # weights + runtime before any training step: the floor both sides share
    data = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    pad_id = (tokenizer.pad_token_id if tokenizer else None) or 0
    counted: list[int] = []  # real tokens of each batch, in the order the Trainer draws them

    def collate(features: list[dict]) -> dict:
        counted.append(sum(len(f["input_ids"]) for f in features))
        return _pad_to_longest(features, pad_id)

    times: list[float] = []
    targs = TrainingArguments(
        output_dir=str(Path(args.work) / f"baseline-{args.round}"), per_device_train_batch_size=args.micro_batch,
        max_steps=args.steps, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[],
        bf16=dtype == torch.bfloat16, gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate,
                      callbacks=[_step_timer(times)])
    trainer.train()
    tokens = sum(counted[1:len(times)])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"tokens_per_s": tokens / sum(times[1:]), "peak_mem_mb": peak_mem_mb(device), "steps": len(times),
            "loaded_mb": loaded_mb, "tokens": tokens, "seconds": sum(times[1:]),
            "dtype": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"), "losses": losses}


def _rss_mb() -> float:
    """Resident memory of this process now (Linux), 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _pad_to_longest(features: list[dict], pad_id: int) -> dict:
    """What tutorials do: pad every batch to its longest example (labels with -100)."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    pad = lambda xs, v: xs + [v] * (width - len(xs))  # noqa: E731
    return {"input_ids": torch.tensor([pad(f["input_ids"], pad_id) for f in features]),
            "labels": torch.tensor([pad(f["labels"], -100) for f in features]),
            "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features])}


def _step_timer(times: list[float]):
    """A Trainer callback appending each optimizer step's wall time to `times`."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    return StepTimer()


def report(results: dict) -> None:
    base, ours = results["baseline"], results["tunelab"]
    print(f"{'':10} {'dtype':>6} {'tokens/s':>10} {'peak MB':>10}")
    for name, r in (("baseline", base), ("tunelab", ours)):
        print(f"{name:10} {r.get('dtype', '?'):>6} {r['tokens_per_s']:>10.1f} {r['peak_mem_mb']:>10.0f}")
    print(f"speed-up  {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x   "
          f"memory {ours['peak_mem_mb'] / base['peak_mem_mb']:.2f}x of baseline")
    floor = base.get("loaded_mb") or 0.0
    if floor and base["peak_mem_mb"] > floor:  # CPU: peak RSS includes the loaded model; show what training adds
        print(f"above the baseline's loaded model ({floor:.0f} MB): baseline {base['peak_mem_mb'] - floor:.0f} MB, "
              f"tunelab {ours['peak_mem_mb'] - floor:.0f} MB")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
