"""The tokenizer inside a GGUF file, converted once to a fast `tokenizer.json`.

Building a tokenizer from GGUF metadata means rebuilding BPE merges from the vocabulary,
which takes tens of seconds for Gemma's 262k tokens. transformers' GGUF converter does it
correctly (sentencepiece and byte-level vocabularies, control tokens as special tokens), so
import runs it once and saves the result; every later load reads `tokenizer.json` directly.
"""

from __future__ import annotations

from pathlib import Path

# Gemma's turn markers: kept whole as special tokens, and <end_of_turn> also ends generation.
GEMMA_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")


def convert_tokenizer(gguf_path: Path, out_dir: Path, arch: str) -> list[int]:
    """Save the GGUF's tokenizer (tokenizer.json + tokenizer_config.json) into `out_dir`.

    Returns the token ids that end a generation (EOS, plus end-of-turn where the model has one).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if arch == "gemma3":
        _mark_special(tok, GEMMA_TURN_TOKENS)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batching needs a pad id; EOS is the usual stand-in
    tok.save_pretrained(str(out_dir))
    return _stop_ids(tok, arch)


def _mark_special(tok, tokens: tuple[str, ...]) -> None:
    """Make sure `tokens` that exist in the vocabulary are special (never split, skippable)."""
    vocab = tok.get_vocab()
    present = [t for t in tokens if t in vocab and t not in tok.all_special_tokens]
    if present:
        tok.add_special_tokens({"additional_special_tokens": present}, replace_extra_special_tokens=False)


def _stop_ids(tok, arch: str) -> list[int]:
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    if arch == "gemma3":
        end = tok.convert_tokens_to_ids(GEMMA_TURN_TOKENS[1])
        if isinstance(end, int) and end != tok.unk_token_id and end not in ids:
            ids.append(end)
    return ids
