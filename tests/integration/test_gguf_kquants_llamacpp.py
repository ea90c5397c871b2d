"""Our numpy K-quants against llama.cpp's own quantizer (through llama-cpp-python).

For each mixture the file we write directly must hold the same tensor types as
`llama_model_quantize` makes from our f16 file and a perplexity on the bundled general
text within 1% of llama.cpp's; llama.cpp must load and decode it. Given the same input
(the f16 file's values; our export itself quantizes the unrounded weights) our
quantizers must write the same bytes as llama.cpp's for nearly every row.
The real-model test does the same for the embedded Gemma 3 270M and prints timings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

import tunelab  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.export.quantize import QUANTS  # noqa: E402

pytestmark = pytest.mark.llamacpp
TEXT = (Path(tunelab.__file__).parent / "assets" / "general_text.txt").read_text(encoding="utf-8")
MIXES = ("q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q4_0")


def llama_cpp_quantize(src: Path, dst: Path, quant: str) -> float:
    """llama.cpp's quantization of GGUF `src` into `dst`; returns the seconds it took."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = QUANTS[quant].file_type, 2
    start = time.perf_counter()
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0
    return time.perf_counter() - start


def perplexity(path: Path, text: str = TEXT) -> float:
    """exp(mean next-token NLL) of `text` under GGUF `path`, as llama.cpp computes the logits."""
    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_batch=1024, logits_all=True, n_threads=2, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=True)[:1024]
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)[:-1]
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))


def tensors(path: Path) -> dict:
    import gguf

    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def same_rows(f16, theirs) -> float:
    """Fraction of rows where our quantizer, fed the f16 tensor, writes llama.cpp's bytes."""
    from tunelab.export.quantize import encode

    x = np.asarray(f16.data, dtype=np.float32)
    ours = encode(x.reshape(x.shape[0], -1), theirs.tensor_type.name)
    b = np.asarray(theirs.data).reshape(ours.shape)
    return float(np.mean(np.all(ours == b, axis=1)))


@pytest.fixture(scope="module")
def wide(tmp_path_factory, tiny_tokenizer_dir):
    """A 4-layer hidden-256 llama (untied head) and its f16 GGUF.

    Its weights are f16 values, so llama.cpp (quantizing the f16 file) and our export
    (quantizing the safetensors) start from the same numbers; on this random model,
    perplexity swings by a few percent with the input's rounding alone.
    """
    from safetensors.torch import load_file, save_file

    from helpers.wide_model import build_wide_model

    root = tmp_path_factory.mktemp("kquants")
    model = build_wide_model("llama", root / "llama", tiny_tokenizer_dir)
    weights = model / "model.safetensors"
    save_file({k: v.half().float() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    return root, model, write_gguf(model, root / "f16.gguf", "f16", log=lambda _m: None)


@pytest.mark.parametrize("quant", MIXES)
def test_matches_llama_cpp_quantize(wide, quant):
    root, model, f16 = wide
    ours = write_gguf(model, root / f"ours-{quant}.gguf", quant, log=lambda _m: None)
    theirs = root / f"llama-{quant}.gguf"
    llama_cpp_quantize(f16, theirs, quant)
    a, b, source = tensors(ours), tensors(theirs), tensors(f16)
    assert {n: t.tensor_type.name for n, t in a.items()} == {n: t.tensor_type.name for n, t in b.items()}
    same = {n: same_rows(source[n], b[n]) for n in b if b[n].tensor_type.name not in ("F32", "F16")}
    print(f"{quant}: rows identical to llama.cpp's, worst tensor {min(same.values()):.4f}, "
          f"all {np.mean(list(same.values())):.4f}")
    assert min(same.values()) > 0.95 and np.mean(list(same.values())) > 0.98
    ppl_ours, ppl_theirs, ppl_f16 = perplexity(ours), perplexity(theirs), perplexity(f16)
    print(f"{quant}: perplexity ours {ppl_ours:.3f}, llama.cpp {ppl_theirs:.3f}, f16 {ppl_f16:.3f}")
    assert abs(ppl_ours / ppl_theirs - 1) < 0.01


def test_llama_cpp_decodes_our_q4_k_m(wide):
    root, model, _ = wide
    path = write_gguf(model, root / "decode-q4_k_m.gguf", "q4_k_m", log=lambda _m: None)
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, verbose=False)
    out = llm.create_completion("Hello", max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0


@pytest.mark.real_model
def test_default_model_q4_k_m_against_llama_cpp(tmp_path):
    from tunelab.store.resolve import resolve_model

    base = resolve_model(None)
    start = time.perf_counter()
    f16 = write_gguf(base, tmp_path / "f16.gguf", "f16", log=lambda _m: None)
    f16_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = write_gguf(base, tmp_path / "ours.gguf", "q4_k_m", log=lambda _m: None)
    ours_s = time.perf_counter() - start
    theirs_s = llama_cpp_quantize(f16, tmp_path / "theirs.gguf", "q4_k_m")
    a, b = tensors(ours), tensors(tmp_path / "theirs.gguf")
    assert {n: t.tensor_type.name for n, t in a.items()} == {n: t.tensor_type.name for n, t in b.items()}
    ppl = {k: perplexity(p) for k, p in (("ours", ours), ("llama.cpp", tmp_path / "theirs.gguf"), ("f16", f16))}
    print(f"default model q4_k_m: export {ours_s:.1f}s (f16 {f16_s:.1f}s + llama.cpp quantize {theirs_s:.1f}s); "
          f"perplexity {ppl}")
    assert abs(ppl["ours"] / ppl["llama.cpp"] - 1) < 0.01
