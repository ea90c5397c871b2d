"""The tokenizer as llama.cpp reads it from GGUF metadata.

Two shapes cover our families:
- byte-level BPE (llama3, qwen, the tiny test tokenizer): model "gpt2", the
  byte-encoded token strings, the merges and a pre-tokenizer name;
- SentencePiece-style (gemma): model "llama", '▁' tokens, byte-fallback tokens,
  and scores whose order reproduces the merge order.
Rows past the tokenizer's size (embeddings are often padded) become unused tokens.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from tunelab.export.errors import ExportError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclasses.dataclass
class Vocab:
    """Everything written under tokenizer.ggml.*."""

    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special: dict[str, int | None] = dataclasses.field(default_factory=dict)
    add_bos: bool = False
    add_space_prefix: bool | None = None


def build_vocab(model_dir: Path, n_rows: int, template: Any) -> Vocab:
    """Read `model_dir`'s tokenizer.json (and tokenizer object) into a Vocab of `n_rows` tokens.

    `template` (a ChatTemplate) names the end-of-turn token written as tokenizer.ggml.eot_token_id.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{path}: missing; GGUF export needs a fast tokenizer (tokenizer.json)")
    data = json.loads(path.read_text(encoding="utf-8"))
    tokens, added = _id_to_token(data)
    if len(tokens) > n_rows:
        raise ExportError(f"{path}: tokenizer has {len(tokens)} tokens but the embedding only {n_rows} rows")
    spm = is_sentencepiece_style(data)
    vocab = Vocab(model="llama" if spm else "gpt2", pre="default" if spm else pre_tokenizer_name(data),
                  tokens=[], types=[])
    for i in range(n_rows):
        text = tokens.get(i)
        vocab.tokens.append(text if text is not None else f"[PAD{i}]")
        vocab.types.append(_token_type(text, added.get(i), spm))
    if spm:
        vocab.scores = _spm_scores(data, tokens, n_rows)
        vocab.add_space_prefix = _prepends_space(data)
    else:
        vocab.merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    _special_ids(vocab, model_dir, template)
    return vocab


def _id_to_token(data: dict) -> tuple[dict[int, str], dict[int, dict]]:
    model = data["model"]
    if model.get("type") == "Unigram":
        tokens = {i: piece for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        tokens = {int(i): t for t, i in model["vocab"].items()}
    added = {int(t["id"]): t for t in data.get("added_tokens", [])}
    tokens.update({i: t["content"] for i, t in added.items()})
    return tokens, added


def is_sentencepiece_style(data: dict) -> bool:
    """True for tokenizers converted from SentencePiece ('▁' for spaces, byte fallback)."""
    model = data["model"]
    if model.get("type") == "Unigram" or model.get("byte_fallback"):
        return True
    return "▁" in json.dumps(data.get("normalizer")) or "Metaspace" in json.dumps(data.get("pre_tokenizer"))


def pre_tokenizer_name(data: dict) -> str:
    """llama.cpp's name for the pre-tokenizer regex of a byte-level BPE tokenizer."""
    text = json.dumps(data.get("pre_tokenizer"))
    if "\\\\p{N}{1,3}" in text:
        return "llama-bpe"
    if "\\\\p{N}" in text:
        return "qwen2"
    if '"ByteLevel"' in text and '"use_regex": true' in text:
        return "gpt-2"
    raise ExportError(f"unknown pre-tokenizer, llama.cpp would split text differently: {text[:200]}")


def _token_type(text: str | None, added: dict | None, spm: bool) -> int:
    if text is None:
        return UNUSED
    if added is not None:
        return CONTROL if added.get("special") else USER_DEFINED
    if spm and _BYTE_TOKEN.match(text):
        return BYTE
    return NORMAL


def _spm_scores(data: dict, tokens: dict[int, str], n_rows: int) -> list[float]:
    model = data["model"]
    if model.get("type") == "Unigram":
        scores = [float(s) for _p, s in model["vocab"]]
        return scores + [-1e9] * (n_rows - len(scores))
    # llama.cpp's SPM merges the adjacent pair whose result scores highest; HF BPE merges by
    # rank. Scoring each token by minus the rank of the merge that makes it gives the same order.
    rank: dict[str, int] = {}
    for r, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    base = len(rank)
    return [0.0 if tokens.get(i) is None else -float(rank.get(tokens[i], base + i)) for i in range(n_rows)]


def _prepends_space(data: dict) -> bool:
    text = json.dumps(data.get("normalizer")) + json.dumps(data.get("pre_tokenizer"))
    return '"Prepend"' in text or '"prepend_scheme": "always"' in text


def _special_ids(vocab: Vocab, model_dir: Path, template: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    stops = template.stop_token_ids(tok)  # end-of-turn ids first, EOS last
    vocab.special = {"bos": tok.bos_token_id, "eos": tok.eos_token_id,
                     "unk": tok.unk_token_id, "pad": tok.pad_token_id, "eot": stops[0] if stops else None}
    ids = tok("a")["input_ids"]
    vocab.add_bos = bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id


def write_vocab(writer: Any, vocab: Vocab) -> None:
    """Add the tokenizer.ggml.* keys to a GGUFWriter."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
               "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id, "eot": writer.add_eot_token_id}
    for key, tid in vocab.special.items():
        if tid is not None:
            setters[key](int(tid))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
