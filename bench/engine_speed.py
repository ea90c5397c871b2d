"""tunelab engine vs transformers on the same model and prompts, in one process run.

    python bench/engine_speed.py                     # CPU: the default Gemma 3 270M
    python bench/engine_speed.py --model NAME --dtype bf16
    python bench/engine_speed.py --quantize int4     # adds rows for the int4 lm_head
    python bench/engine_speed.py --speculative 4     # adds (a) with prompt-lookup drafts, both engines
    python bench/engine_speed.py --gpu-llama3-8b     # GPU: Llama-3-8B shape, random weights

(a) one stream, 256 new tokens (greedy, EOS ignored): tokens/s of the whole request.
(b) N requests with mixed prompt and output lengths: generated tokens/s over the batch.
    Baseline: transformers' continuous-batching `generate_batch` when it runs here, else
    padded batched `generate` (the report says which).
On GPU the bandwidth limit of (a) is weight bytes / measured device copy bandwidth.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tunelab.engine import LLM, SamplingParams  # noqa: E402


def main() -> None:
    args = _parse()
    if args.gpu_llama3_8b:
        args.model = str(_random_llama3_8b(Path(args.work_dir)))
        args.dtype = "bf16"
    from tunelab.store.resolve import resolve_model

    model_dir = resolve_model(args.model)
    print(f"model: {model_dir}  dtype: {args.dtype}  threads: {torch.get_num_threads()}")
    single: dict[str, float] = {}
    batch: dict[str, float] = {}
    greedy: dict[str, list[int]] = {}
    for quantize in (None, *([args.quantize] if args.quantize else [])):
        name = f"tunelab {quantize}" if quantize else "tunelab"
        llm = LLM(model_dir, dtype=args.dtype, max_model_len=args.max_model_len, quantize=quantize)
        device = llm.engine.device
        prompt = _prompt_ids(llm, 32)
        single[name], greedy[name] = _ours_single(llm, prompt, args.new_tokens)
        print(f"{name} (a): {single[name]:.1f} tok/s", flush=True)
        reqs = _mixed_requests(llm, args.requests, args.seed, args.max_prompt, args.max_output)
        batch[name] = _ours_batch(llm, reqs)
        print(f"{name} (b): {batch[name]:.1f} tok/s", flush=True)
        if quantize is None:
            engine_weights = _weight_bytes(llm.engine.model)
        del llm
    if args.quantize:
        print(f"greedy agreement with exact: {_agreement(greedy['tunelab'], greedy[f'tunelab {args.quantize}'])}")
    if args.speculative:
        name = f"tunelab spec{args.speculative}"
        llm = LLM(model_dir, dtype=args.dtype, max_model_len=args.max_model_len,
                  num_speculative_tokens=args.speculative)
        single[name], greedy[name] = _ours_single(llm, prompt, args.new_tokens)
        stats = llm.engine.stats()
        print(f"{name} (a): {single[name]:.1f} tok/s, drafts accepted {stats['spec_accepted_tokens']}/"
              f"{stats['spec_draft_tokens']}, greedy agreement with exact: "
              f"{_agreement(greedy['tunelab'], greedy[name])}", flush=True)
        del llm
    if not args.skip_hf:
        hf = _load_hf(model_dir, args.dtype, device)
        single["transformers"] = _hf_single(hf, prompt, args.new_tokens, device)
        if args.speculative:  # the same idea in transformers: generate(prompt_lookup_num_tokens=K)
            single["transformers lookup"] = _hf_single(hf, prompt, args.new_tokens, device, args.speculative)
        print(f"transformers (a): {single['transformers']:.1f} tok/s", flush=True)
        batch["transformers"], baseline = _hf_batch(hf, reqs, device, args.hf_batch)
    else:
        baseline = "skipped"
    _report(single, batch, baseline, args, engine_weights, device)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="store name or HF dir (default: embedded Gemma 3 270M)")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), bf16, fp16, fp32")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-prompt", type=int, default=128, help="prompt lengths are drawn from [16, this]")
    p.add_argument("--max-output", type=int, default=64, help="output lengths are drawn from [16, this]")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--hf-batch", type=int, default=16, help="batch size of the padded-generate fallback")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-hf", action="store_true", help="only time the tunelab engine")
    p.add_argument("--quantize", default=None,
                   help="also time the engine with this weight-only quantization (int8, int4, int4-all, ...)")
    p.add_argument("--speculative", type=int, default=0, metavar="K",
                   help="also time (a) with K prompt-lookup drafts per step, and transformers' prompt lookup")
    p.add_argument("--gpu-llama3-8b", action="store_true", help="random Llama-3-8B-shaped model on CUDA")
    p.add_argument("--work-dir", default="/tmp/tunelab-bench", help="where the random GPU model is written")
    return p.parse_args()


# ---- workloads ---------------------------------------------------------------------------------

def _prompt_ids(llm: LLM, n: int) -> list[int]:
    text = "The history of the printing press begins in the fifteenth century, when " * 8
    return llm.tokenizer.encode(text)[:n]


def _mixed_requests(llm: LLM, count: int, seed: int, max_prompt: int, max_output: int):
    rng = random.Random(seed)
    base = llm.tokenizer.encode("Write a short story about a lighthouse keeper and a storm. " * 40)
    return [(base[: rng.randint(16, max_prompt)], rng.randint(16, max_output)) for _ in range(count)]


# ---- tunelab -------------------------------------------------------------------------------------

def _ours_single(llm: LLM, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    llm.generate([prompt], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))  # warm-up
    start = time.perf_counter()
    out = llm.generate([prompt], SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True))
    _sync()
    return len(out[0].token_ids) / (time.perf_counter() - start), out[0].token_ids


def _agreement(exact: list[int], other: list[int]) -> str:
    """How long the greedy outputs stay identical (they diverge for good after the first change)."""
    same = next((i for i, (a, b) in enumerate(zip(exact, other)) if a != b), min(len(exact), len(other)))
    return f"first {same} of {len(exact)} greedy tokens identical"


def _ours_batch(llm: LLM, reqs) -> float:
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for _, n in reqs]
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in reqs], params)
    _sync()
    return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)


# ---- transformers ------------------------------------------------------------------------------

def _load_hf(model_dir: Path, dtype: str, device: torch.device):
    from transformers import AutoModelForCausalLM

    from tunelab.dtypes import resolve_dtype

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(dtype, device))
    return model.to(device).eval()


def _hf_single(model, prompt: list[int], new_tokens: int, device, lookup: int = 0) -> float:
    ids = torch.tensor([prompt], device=device)
    kw = dict(do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens)
    if lookup:
        kw["prompt_lookup_num_tokens"] = lookup
    with torch.inference_mode():
        model.generate(ids, **{**kw, "min_new_tokens": 8, "max_new_tokens": 8})  # warm-up
        start = time.perf_counter()
        out = model.generate(ids, **kw)
        _sync()
    return (out.shape[1] - len(prompt)) / (time.perf_counter() - start)


def _hf_batch(model, reqs, device, batch_size: int) -> tuple[float, str]:
    try:
        return _hf_generate_batch(model, reqs), "transformers generate_batch (continuous batching)"
    except Exception as err:  # not every transformers build runs it on every device
        print(f"generate_batch unavailable here ({type(err).__name__}: {str(err)[:120]}); "
              f"falling back to padded generate, batch {batch_size}")
        return _hf_padded(model, reqs, device, batch_size), f"transformers padded generate (batch {batch_size})"


def _hf_generate_batch(model, reqs) -> float:
    from transformers import GenerationConfig

    longest = max(n for _, n in reqs)  # one max_new_tokens for all: count what it really generated
    cfg = GenerationConfig(max_new_tokens=longest, do_sample=False, eos_token_id=-1, pad_token_id=0)
    start = time.perf_counter()
    outs = model.generate_batch([p for p, _ in reqs], generation_config=cfg, progress_bar=False)
    _sync()
    done = sum(len(o.generated_tokens) for o in outs.values())
    if len(outs) < len(reqs) or done == 0:  # it logs failures instead of raising
        raise RuntimeError(f"generate_batch returned {len(outs)} of {len(reqs)} requests")
    return done / (time.perf_counter() - start)


def _hf_padded(model, reqs, device, batch_size: int) -> float:
    total, start = 0, time.perf_counter()
    for i in range(0, len(reqs), batch_size):
        chunk = reqs[i:i + batch_size]
        width = max(len(p) for p, _ in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in chunk], device=device)  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk], device=device)
        n = max(k for _, k in chunk)
        with torch.inference_mode():
            model.generate(ids, attention_mask=mask, do_sample=False, min_new_tokens=n, max_new_tokens=n,
                           pad_token_id=0)
        total += n * len(chunk)
    _sync()
    return total / (time.perf_counter() - start)


# ---- GPU model and report ---------------------------------------------------------------------

def _random_llama3_8b(work: Path) -> Path:
    """A Llama-3-8B-shaped checkpoint with random bf16 weights (written once)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = work / "llama3-8b-random"
    if (out / "config.json").is_file():
        return out
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    tok_dir = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tiny_tokenizer"
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(out)  # prompts only need some ids
    return out


def _copy_bandwidth(device) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    x = torch.empty(2**30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    _sync()
    start = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    _sync()
    return 2 * x.numel() * 10 / (time.perf_counter() - start)


def _weight_bytes(model) -> int:
    seen = {}
    for p in model.parameters():
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _report(single: dict, batch: dict, baseline: str, args, weight_bytes: int, device) -> None:
    print(f"\n(a) one stream, {args.new_tokens} new tokens")
    for name, v in single.items():
        print(f"    {name:18s} {v:8.1f} tok/s")
    _ratios(single)
    if device.type == "cuda":
        limit = _copy_bandwidth(device) / weight_bytes
        print(f"    bandwidth limit {limit:.1f} tok/s -> tunelab at {100 * single['tunelab'] / limit:.0f}%")
    print(f"\n(b) {args.requests} mixed requests (prompts 16-{args.max_prompt}, outputs 16-{args.max_output})")
    for name, v in batch.items():
        print(f"    {name:18s} {v:8.1f} tok/s")
    _ratios(batch, f"   baseline: {baseline}")
    print(f"\nweights {weight_bytes / 1e9:.2f} GB, device {device}, OMP threads {os.environ.get('OMP_NUM_THREADS')}")


def _ratios(rates: dict[str, float], note: str = "") -> None:
    if "transformers" not in rates:
        return
    for name, v in rates.items():
        if name.startswith("tunelab"):
            print(f"    ratio {name[8:] or 'exact':12s} {v / rates['transformers']:8.2f}x{note}")
    spec = next((k for k in rates if k.startswith("tunelab spec")), None)
    if spec and "transformers lookup" in rates:
        print(f"    ratio {spec[8:]} vs transformers prompt lookup {rates[spec] / rates['transformers lookup']:.2f}x")


if __name__ == "__main__":
    main()
