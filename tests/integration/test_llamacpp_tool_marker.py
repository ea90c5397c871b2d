"""The llama.cpp backend keeps a tool-call marker that is a special token, as the engine does.

llama.cpp's detokenizer drops control tokens, so Mistral's [TOOL_CALLS] would vanish and the
mistral tool parser would see prose; `marker_ids` finds such markers in the loaded GGUF.
"""

from __future__ import annotations

import shutil

import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

from tunelab.data.templates import ChatTemplate  # noqa: E402
from tunelab.export.gguf import write_gguf  # noqa: E402
from tunelab.serve.backends.llamacpp import marker_ids  # noqa: E402

pytestmark = pytest.mark.llamacpp


def test_special_tool_call_marker_is_detokenized_with_its_text(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    model = shutil.copytree(tiny_models["llama"], tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(model)
    tok.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})  # id 453 < 512 embedding rows
    tok.save_pretrained(model)
    template = ChatTemplate.builtin("mistral", eos_token=tok.eos_token)
    path = write_gguf(model, tmp_path / "m.gguf", "f16", template, log=lambda _m: None)
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, verbose=False)
    (marker,) = llm.tokenize(b"[TOOL_CALLS]", add_bos=False, special=True)
    assert llm.detokenize([marker]) == b"", "llama.cpp drops it by default: the reason for the fix"
    assert marker_ids(llm) == {marker}
    eos = llm.token_eos()
    assert eos not in marker_ids(llm)  # other special tokens stay dropped
