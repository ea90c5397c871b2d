"""DPO speed: tunelab's trainer (stage=dpo) vs TRL's DPOTrainer + PEFT, same model, pairs and LoRA.

    python bench/dpo_speed.py                    # CPU: embedded Gemma 3 270M, bundled preference pairs, fp32
    python bench/dpo_speed.py --model NAME --steps 20

Both sides train LoRA (all linear layers, same rank), beta 0.1, sigmoid loss, the reference
being the base with the adapter disabled, on the bundled pairs in the same order of batches.
Each side runs in its own subprocess (so peak memory, max RSS on CPU or max allocated on GPU,
is its own) and the sides alternate over --rounds so load from other processes hits both.
pairs/s counts the pairs of each timed optimizer step over its wall time; the first step of
each side pays one-off warm-up costs and is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from train_speed import _model_dir, _step_timer, interleaved_rounds  # bench/ is the script dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir or store name (default: embedded Gemma 3 270M)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per side")
    p.add_argument("--micro-batch", type=int, default=4, help="pairs per step")
    p.add_argument("--seq", type=int, default=512, help="cutoff length")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--precision", default="auto", help="auto = bf16 on GPUs that support it, else fp32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arch", default="default", help=argparse.SUPPRESS)  # what train_speed's helpers read
    p.add_argument("--only", choices=["tunelab", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="tunelab-dpo-bench-") as work:
        (Path(work) / "setup.json").write_text(json.dumps({"model_dir": str(_model_dir(args, Path(work)))}))
        rounds = interleaved_rounds(__file__, argv or sys.argv[1:], work, args.rounds)
    for r, results in enumerate(rounds):
        print(f"round {r + 1}")
        report(results)
    if len(rounds) > 1:
        print("all rounds (pairs over seconds, max peak)")
        report({side: _pool([res[side] for res in rounds]) for side in ("baseline", "tunelab")})
    return 0


def _pool(results: list[dict]) -> dict:
    pairs, seconds = sum(r["pairs"] for r in results), sum(r["seconds"] for r in results)
    return {"pairs_per_s": pairs / seconds, "peak_mem_mb": max(r["peak_mem_mb"] for r in results),
            "pairs": pairs, "seconds": seconds}


def _rows(steps: int, batch: int) -> list[dict]:
    """The bundled pairs as conversational TRL rows, repeated to fill `steps` batches."""
    from tunelab.data.demo import preference_train_path

    rows = [json.loads(line) for line in preference_train_path().read_text(encoding="utf-8").splitlines()]
    rows = (rows * (steps * batch // len(rows) + 1))[: steps * batch]
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def run_side(args: argparse.Namespace) -> dict:
    """Train one side in this process and return its numbers."""
    model_dir = Path(json.loads((Path(args.work) / "setup.json").read_text())["model_dir"])
    rows = _rows(args.steps, args.micro_batch)
    return (run_tunelab if args.only == "tunelab" else run_trl)(args, model_dir, rows)


def run_tunelab(args: argparse.Namespace, model_dir: Path, rows: list[dict]) -> dict:
    from tunelab.config import load_config
    from tunelab.train.config import TrainConfig
    from tunelab.train.trainer import train

    data = Path(args.work) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = load_config(TrainConfig, None, {
        "model": str(model_dir), "datasets": [str(data)], "stage": "dpo", "max_steps": args.steps,
        "micro_batch_size": args.micro_batch, "lora": {"rank": args.rank, "alpha": 2 * args.rank},
        "data": {"cutoff_len": args.seq}, "precision": args.precision, "lr": 1e-5,
        "output": str(Path(args.work) / f"tunelab-run-{args.round}"),
    })
    result = train(cfg, examples=None)
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = metrics[1:]
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in timed)
    return {"pairs_per_s": len(timed) * args.micro_batch / seconds, "pairs": len(timed) * args.micro_batch,
            "seconds": seconds, "peak_mem_mb": max(m["peak_mem_mb"] for m in metrics)}


def run_trl(args: argparse.Namespace, model_dir: Path, rows: list[dict]) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tunelab.data.templates import ChatTemplate
    from tunelab.dtypes import resolve_dtype
    from tunelab.train.metrics import peak_mem_mb

    on_gpu = torch.cuda.is_available()
    dtype = resolve_dtype(args.precision, "cuda" if on_gpu else "cpu", training=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa")
    times: list[float] = []
    config = DPOConfig(
        output_dir=str(Path(args.work) / f"trl-{args.round}"), per_device_train_batch_size=args.micro_batch,
        max_steps=args.steps, learning_rate=1e-5, beta=0.1, loss_type=["sigmoid"], max_length=args.seq,
        logging_steps=1000, save_strategy="no", report_to=[], bf16=dtype == torch.bfloat16,
        use_cpu=not on_gpu, dataloader_num_workers=0, seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = ChatTemplate.for_model(model_dir).source  # the template tunelab trains with
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                                task_type="CAUSAL_LM"),
                         callbacks=[_step_timer(times)])
    trainer.train()
    seconds = sum(times[1:])
    device = torch.device("cuda" if on_gpu else "cpu")
    return {"pairs_per_s": (len(times) - 1) * args.micro_batch / seconds, "pairs": (len(times) - 1) * args.micro_batch,
            "seconds": seconds, "peak_mem_mb": peak_mem_mb(device)}


def report(results: dict) -> None:
    base, ours = results["baseline"], results["tunelab"]
    print(f"{'':10} {'pairs/s':>10} {'peak MB':>10}")
    for name, r in (("TRL", base), ("tunelab", ours)):
        print(f"{name:10} {r['pairs_per_s']:>10.3f} {r['peak_mem_mb']:>10.0f}")
    print(f"speed-up  {ours['pairs_per_s'] / base['pairs_per_s']:.2f}x   "
          f"memory {ours['peak_mem_mb'] / base['peak_mem_mb']:.2f}x of TRL")


if __name__ == "__main__":
    raise SystemExit(main())
