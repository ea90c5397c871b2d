"""The tokenizer inside a GGUF file, converted once to a fast `tokenizer.json`.

Building a tokenizer from GGUF metadata means rebuilding BPE merges from the vocabulary
(515k merges for Gemma's 262k tokens, about 6.5 CPU-seconds in all). transformers' GGUF converter does it
correctly (sentencepiece and byte-level vocabularies, control tokens as special tokens, the
chat template, add_bos_token), so import runs it once and saves the result; every later
load reads `tokenizer.json` directly.

What llama.cpp would do and the converter does not is filled in here: a byte-level
vocabulary keeps the generic tokenizer class (a model-specific one, like Gemma's, assumes
sentencepiece), and generation stops on every end-of-generation id the file names
(EOS, EOT, EOM), as llama.cpp's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Gemma's turn markers: kept whole as special tokens, and <end_of_turn> also ends generation.
GEMMA_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")
_STOP_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def convert_tokenizer(gguf_path: Path, out_dir: Path, arch: str, meta: dict[str, Any],
                      model_type: str | None = None) -> list[int]:
    """Save the GGUF's tokenizer (tokenizer.json + tokenizer_config.json) into `out_dir`.

    `meta` is the file's metadata, `model_type` the HF config's (it picks the tokenizer class).
    Returns the token ids that end a generation.
    """
    tok = _load(gguf_path, meta, model_type)
    if arch == "gemma3":
        _mark_special(tok, GEMMA_TURN_TOKENS)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batching needs a pad id; EOS is the usual stand-in
    tok.save_pretrained(str(out_dir))
    return _stop_ids(tok, arch, meta)


def _load(gguf_path: Path, meta: dict[str, Any], model_type: str | None = None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    if meta.get("tokenizer.ggml.model") == "gpt2":  # byte-level
        return PreTrainedTokenizerFast.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # Naming the class (by model type) skips AutoTokenizer's own read of the model config from the
    # GGUF, which for architectures its fast reader lacks (gemma3) parses the whole file again:
    # 25 s of CPU instead of 7 s for Gemma 3 270M (bench numbers in docs/benchmarks.md).
    named = {"tokenizer_type": model_type} if TOKENIZER_MAPPING_NAMES.get(model_type or "") else {}
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, **named)


def _mark_special(tok, tokens: tuple[str, ...]) -> None:
    """Make sure `tokens` that exist in the vocabulary are special (never split, skippable)."""
    vocab = tok.get_vocab()
    present = [t for t in tokens if t in vocab and t not in tok.all_special_tokens]
    if present:
        tok.add_special_tokens({"additional_special_tokens": present}, replace_extra_special_tokens=False)


def _stop_ids(tok, arch: str, meta: dict[str, Any]) -> list[int]:
    ids = [int(meta[k]) for k in _STOP_KEYS if meta.get(k) is not None]
    if not ids and tok.eos_token_id is not None:
        ids = [tok.eos_token_id]
    if arch == "gemma3":
        end = tok.convert_tokens_to_ids(GEMMA_TURN_TOKENS[1])
        if isinstance(end, int) and end != tok.unk_token_id:
            ids.append(end)
    return list(dict.fromkeys(ids))  # EOS first, no repeats
