"""Fixtures for store tests: tiny GGUF files, and a fresh store per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_fixtures import gguf_test_config, write_gguf


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty store in its own $TUNELAB_HOME (CLI subprocesses inherit it)."""
    from tunelab.store import Store

    home = tmp_path / "home"
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    return Store(home)


@pytest.fixture(scope="session")
def gguf_hf_models(tmp_path_factory, tiny_tokenizer_dir) -> dict[str, Path]:
    """arch -> a 2-layer hidden-256 random HF model, the source of the tiny GGUF files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ids = dict(bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    root = tmp_path_factory.mktemp("gguf_hf")
    out = {}
    for arch in ("llama", "qwen2", "gemma3"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(gguf_test_config(arch, ids), dtype=torch.float32)
        with torch.no_grad():  # init leaves norms all 0 or 1, which would hide a swapped norm
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.1)
        out[arch] = root / arch
        model.save_pretrained(out[arch])
        tok.save_pretrained(out[arch])
    return out


@pytest.fixture(scope="session")
def make_gguf(tmp_path_factory, gguf_hf_models):
    """(arch, qtype) -> path of a tiny GGUF of that model with matrices stored as qtype."""
    root = tmp_path_factory.mktemp("gguf_files")
    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, qtype: str) -> Path:
        if (arch, qtype) not in cache:
            cache[arch, qtype] = write_gguf(gguf_hf_models[arch], root / f"tiny-{arch}-{qtype}.gguf", qtype)
        return cache[arch, qtype]

    return make
