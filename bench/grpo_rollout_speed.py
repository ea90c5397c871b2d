"""GRPO rollout speed: tunelab's engine (what stage=grpo samples with) vs TRL's generation path
(transformers `generate` on the PEFT model, left-padded, G copies of each prompt), in one process run.

    python bench/grpo_rollout_speed.py                 # CPU: embedded Gemma 3 270M, bundled arithmetic prompts
    python bench/grpo_rollout_speed.py --model NAME --prompts 8 --group 8 --max-tokens 128

Both sides sample with the same policy: the base plus one LoRA (all linear layers, rank 16,
random non-zero B so the adapter matters), temperature 1, up to --max-tokens per completion,
stopping at the chat template's end-of-turn / EOS. Ours installs the adapter in the engine the
way the trainer does each step (train/rollout.py); TRL's path (GRPOTrainer without vLLM) calls
`unwrapped_model.generate` on the PEFT model. tokens/s = completion tokens (to the first stop,
inclusive) over wall time; the sides alternate over --rounds so load from other processes hits both,
and round 1 only warms both up (it is printed, not pooled).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    args = _parse()
    from tunelab.data.demo import grpo_train_path
    from tunelab.data.templates import encode_prompt, resolve_template
    from tunelab.store.resolve import resolve_model

    model_dir = resolve_model(args.model)
    template = resolve_template(model_dir, None, None, None)
    peft = _policy(model_dir, args.rank)
    rows = [json.loads(line) for line in grpo_train_path().read_text().splitlines()][: args.prompts]
    rollout = _rollout(model_dir, template, args, peft)
    prompts = [encode_prompt(template, rollout.engine.tokenizer, [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    stops = set(rollout.params.stop_token_ids) | set(rollout.engine.config.eos_token_ids)
    print(f"model: {model_dir}  threads: {torch.get_num_threads()}  load: {os.getloadavg()[0]:.1f}  "
          f"prompts {len(prompts)} x group {args.group}, up to {args.max_tokens} tokens, T=1")
    totals = {"tunelab engine": [0, 0.0], "transformers generate": [0, 0.0]}
    for r in range(args.rounds):
        for name, run in (("tunelab engine", lambda: _ours(rollout, peft, prompts, r)),
                          ("transformers generate", lambda: _hf(peft, prompts, args, stops, r))):
            tokens, seconds = run()
            if r > 0 or args.rounds == 1:  # round 1 warms both up (first-call costs) unless it is the only one
                totals[name][0] += tokens
                totals[name][1] += seconds
            print(f"round {r + 1} {name}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s", flush=True)
    rate = {name: t / s for name, (t, s) in totals.items()}
    for name, value in rate.items():
        print(f"rounds 2..{args.rounds} {name}: {value:.1f} tok/s" if args.rounds > 1 else f"{name}: {value:.1f} tok/s")
    print(f"ratio engine / generate: {rate['tunelab engine'] / rate['transformers generate']:.2f}x  "
          f"(load after: {os.getloadavg()[0]:.1f})")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model dir or store name (default: embedded Gemma 3 270M)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per rollout batch (micro_batch_size)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt (grpo.sampling.n)")
    p.add_argument("--max-tokens", type=int, default=64, help="longest completion")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    return p.parse_args()


def _policy(model_dir: Path, rank: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1e-3)
    return peft


def _rollout(model_dir: Path, template, args, peft):
    from tunelab.engine.config import SamplingParams
    from tunelab.train.rollout import Rollout

    params = SamplingParams(n=args.group, max_tokens=args.max_tokens, temperature=1.0)
    return Rollout(model_dir, template, params, torch.float32, args.prompts * args.group, 512)


def _ours(rollout, peft, prompts: list[list[int]], seed: int) -> tuple[int, float]:
    start = time.perf_counter()
    rollout.sync(peft)  # the trainer installs the adapter before every rollout; timed with it
    done = rollout.generate(prompts, seed=seed * 1000)
    return sum(map(len, done.token_ids)), time.perf_counter() - start


@torch.no_grad()
def _hf(peft, prompts: list[list[int]], args, stops: set[int], seed: int) -> tuple[int, float]:
    rows = [p for p in prompts for _ in range(args.group)]
    width = max(map(len, rows))
    pad = peft.config.pad_token_id if getattr(peft.config, "pad_token_id", None) is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = peft.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                        max_new_tokens=args.max_tokens, eos_token_id=sorted(stops), pad_token_id=pad)
    seconds = time.perf_counter() - start
    return sum(_completion_len(row.tolist(), stops) for row in out[:, width:]), seconds


def _completion_len(row: list[int], stops: set[int]) -> int:
    """Tokens up to and including the first stop (TRL's completion mask)."""
    return next((i + 1 for i, t in enumerate(row) if t in stops), len(row))


if __name__ == "__main__":
    main()
