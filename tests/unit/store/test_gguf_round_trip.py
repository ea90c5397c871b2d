"""HF model -> our GGUF export -> GGUF import gives back the same chat behaviour.

The imported directory must keep the chat template, BOS handling, special tokens and
end-of-generation ids, so tunelab renders the same prompt ids for it as for the source
model, and (f16 storage) computes the same logits.
"""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.data.templates import encode_prompt, resolve_template
from tunelab.export.gguf import write_gguf
from tunelab.store.import_gguf import import_gguf

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 你好 <think>x</think>"}]
FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, tiny_tokenizer_dir):
    """arch -> (source HF dir, GGUF file, imported dir), built once per arch."""
    from helpers.wide_model import build_wide_model

    root, cache = tmp_path_factory.mktemp("round_trip"), {}

    def make(arch: str):
        if arch not in cache:
            source = build_wide_model(arch, root / arch, tiny_tokenizer_dir)
            gguf = write_gguf(source, root / f"{arch}.gguf", "f16", log=lambda _m: None)
            out = root / f"{arch}-imported"
            out.mkdir()
            import_gguf(gguf, out)
            cache[arch] = (source, gguf, out)
        return cache[arch]

    return make


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("arch", FAMILIES)
def test_import_renders_the_same_prompt(round_trip, arch):
    source, _, imported = round_trip(arch)
    src_tok, imp_tok = _tokenizer(source), _tokenizer(imported)
    src_tpl, imp_tpl = resolve_template(source), resolve_template(imported)
    assert imp_tpl.source == src_tpl.source
    assert encode_prompt(imp_tpl, imp_tok, MESSAGES) == encode_prompt(src_tpl, src_tok, MESSAGES)
    text = "plain text <|im_end|> and more"
    assert imp_tok(text)["input_ids"] == src_tok(text)["input_ids"]  # BOS added exactly when the source adds it
    assert imp_tok.bos_token == src_tok.bos_token and imp_tok.eos_token == src_tok.eos_token
    assert set(src_tok.all_special_ids) <= set(imp_tok.all_special_ids) | {
        i for i, t in imp_tok.added_tokens_decoder.items() if t.special}
    ids = src_tok(text)["input_ids"]
    assert imp_tok.decode(ids, skip_special_tokens=True) == src_tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("arch", FAMILIES)
def test_import_stops_where_the_source_stops(round_trip, arch):
    source, _, imported = round_trip(arch)
    stops = json.loads((imported / "generation_config.json").read_text())["eos_token_id"]
    stops = stops if isinstance(stops, list) else [stops]
    template_stops = resolve_template(source).stop_token_ids(_tokenizer(source))
    assert set(template_stops) <= set(stops)


@pytest.mark.parametrize("arch", FAMILIES)
def test_import_computes_the_same_logits(round_trip, arch):
    from transformers import AutoModelForCausalLM

    source, _, imported = round_trip(arch)
    a = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    assert type(a) is type(b)
    ids = torch.tensor([[5, 80, 200, 31, 77, 300, 12, 9, 41, 100, 7]])
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    assert (la - lb).abs().max() < 2e-3 * la.abs().max()  # f16 storage is the only difference
