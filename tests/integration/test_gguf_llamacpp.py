"""Exported GGUF files really load and run in llama.cpp (through llama-cpp-python).

f16 must reproduce transformers' greedy continuation of the merged model token for
token; q8_0 must stay close (agreement is printed). Tokenization of mixed English,
Chinese and emoji text must give the same ids in llama.cpp as in our tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from tunelab.export.exporter import export  # noqa: E402
from helpers.run_factory import make_run  # noqa: E402

pytestmark = pytest.mark.llamacpp
TEXT = "Hello world! 你好，世界。Fine-tuning 🙂🚀 is fun: 42 tokens\n  ok"
PROMPTS = [[10, 200, 31, 77], [300, 5, 6, 400, 12], [1, 250, 251, 252]]
N_NEW = 8


def _load(path: Path, **kw):
    return llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, verbose=False, **kw)


def _greedy_llama_cpp(llm, prompt: list[int]) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == N_NEW:
            return out
    return out


def _greedy_reference(model, prompt: list[int]) -> list[int]:
    import torch

    ids = model.generate(torch.tensor([prompt]), max_new_tokens=N_NEW, do_sample=False,
                         eos_token_id=None, pad_token_id=0, min_new_tokens=N_NEW)
    return ids[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """arch -> (merged HF dir, {quant: gguf path}) for a LoRA run on each tiny model."""
    from tunelab.export.merge import merge_run
    from tunelab.rundir import load_finished

    root = tmp_path_factory.mktemp("llamacpp")
    out = {}
    for arch, base in tiny_models.items():
        run = make_run(base, root / f"run-{arch}", seed=1)
        merged = merge_run(load_finished(run), root / f"merged-{arch}", log=lambda _m: None)
        files = {q: export(str(run), "gguf", q, root / f"{arch}-{q}.gguf", log=lambda _m: None).gguf
                 for q in ("f16", "q8_0")}
        out[arch] = (merged, files)
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f16_greedy_matches_and_q8_0_stays_close(exported, arch):
    import torch
    from transformers import AutoModelForCausalLM

    merged, files = exported[arch]
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    ref = [_greedy_reference(model, p) for p in PROMPTS]
    f16 = _load(files["f16"])
    assert [_greedy_llama_cpp(f16, p) for p in PROMPTS] == ref
    q8 = _load(files["q8_0"])
    got = [_greedy_llama_cpp(q8, p) for p in PROMPTS]
    agree = np.mean([a == b for r, g in zip(ref, got) for a, b in zip(r, g)])
    print(f"{arch} q8_0 greedy agreement with f32 reference: {agree:.2%}")
    assert agree >= 0.5


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f16_logits_match_transformers(exported, arch):
    import torch
    from transformers import AutoModelForCausalLM

    merged, files = exported[arch]
    ids = PROMPTS[0] + PROMPTS[1] + PROMPTS[2]  # 13 tokens: longer than gemma3's 8-token window
    llm = _load(files["f16"], logits_all=True)
    llm.eval(ids)
    theirs = np.asarray(llm.scores[: len(ids)])
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(theirs - ours).max() < 5e-3


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_tokenizer_round_trip(exported, arch):
    from transformers import AutoTokenizer

    merged, files = exported[arch]
    tok = AutoTokenizer.from_pretrained(merged)
    llm = llama_cpp.Llama(str(files["q8_0"]), vocab_only=True, verbose=False)
    ours = tok(TEXT)["input_ids"]
    assert llm.tokenize(TEXT.encode(), add_bos=True, special=True) == ours
    assert llm.detokenize(ours).decode() == TEXT


@pytest.mark.real_model
def test_default_model_q8_0_loads_and_tokenizes_identically(tmp_path):
    from transformers import AutoTokenizer

    from tunelab.store.resolve import resolve_model

    base = resolve_model(None)
    out = export(str(base), "gguf", "q8_0", tmp_path / "default-q8_0.gguf", log=lambda _m: None).gguf
    llm = llama_cpp.Llama(str(out), n_ctx=64, n_threads=2, verbose=False)
    tok = AutoTokenizer.from_pretrained(base)
    assert llm.tokenize(TEXT.encode(), add_bos=True, special=True) == tok(TEXT)["input_ids"]
    assert llm.n_vocab() == len(tok)
