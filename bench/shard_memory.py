"""Per-process peak memory and step time: DDP vs FSDP2, 2 CPU processes (gloo), full fine-tuning.

    python bench/shard_memory.py                       # random 8-layer Llama (~57M params), 4 steps
    python bench/shard_memory.py --layers 12 --hidden 1024 --steps 6

Each launch is `torchrun --nproc_per_node 2 -m tunelab train method=full`, the FSDP one with
ACCELERATE_USE_FSDP=true. Peak memory is the main process's max RSS (`peak_mem_mb`, which includes
loading the whole model before it is sharded); step time is the median of the steps after the first.
glibc keeps freed heap blocks (FSDP frees each gathered layer after use), which hides the saving
in max RSS; MALLOC_MMAP_THRESHOLD_ makes large tensors their own mappings, returned when freed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [("who are you?", "I am the tunelab assistant."), ("what is 2+2?", "2+2 is 4."),
             ("name a color", "Blue is a color."), ("capital of france?", "Paris is the capital of France.")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8, help="decoder layers of the random Llama")
    p.add_argument("--hidden", type=int, default=768, help="hidden size (intermediate = 8/3 x hidden)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per launch")
    return p.parse_args(argv)


def build_model(out: Path, layers: int, hidden: int) -> Path:
    """A random Llama with the tests' tiny tokenizer, saved as an HF directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(ROOT / "tests" / "assets" / "tiny_tokenizer")
    cfg = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def launch(model: Path, data: Path, out: Path, steps: int, fsdp: bool) -> dict:
    """One 2-process run; its peak memory and median step time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072",
               **({"ACCELERATE_USE_FSDP": "true"} if fsdp else {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tunelab",
           "train", f"model={model}", f"datasets={data}", "method=full", f"max_steps={steps}", "micro_batch_size=2",
           "data.cutoff_len=64", "eval_split=0", f"output={out}"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    return {"peak_mb": max(r["peak_mem_mb"] for r in rows), "step_s": statistics.median(times)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "model", args.layers, args.hidden)
        data = tmp / "chat.jsonl"
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QUESTIONS]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows * 8))
        print("| launch | peak RSS per process (MiB) | step time (s) |\n|---|---|---|")
        for name, fsdp in (("DDP", False), ("FSDP2", True)):
            result = launch(model, data, tmp / name, args.steps, fsdp)
            print(f"| {name} | {result['peak_mb']:.0f} | {result['step_s']:.2f} |")


if __name__ == "__main__":
    main()
