"""Streaming detokenization that never emits broken UTF-8 or any part of a stop string.

Two layers, each holding text back for its own reason:

1. UTF-8: a byte-level token can carry half a character. Each new token's text is
   the decode of a small window of recent tokens minus the decode of the window
   without the new ones (so sentencepiece's leading-space rules see context); while
   that decode ends in U+FFFD the character is incomplete and nothing is emitted.
2. Stop strings (`StopStrings`, shared with the llama.cpp backend): the longest suffix
   of the text that could still grow into a stop string is held back. When a stop
   string completes, the text before it is emitted, the rest dropped, and `stopped`
   is set so the sequence finishes with "stop".

`flush()` at the end of a sequence releases whatever is still held back.

Special tokens are dropped from the text, except a tool-call marker that is one
(`tools.formats.CALL_MARKERS`: Mistral's `[TOOL_CALLS]`, Llama's `<|python_tag|>`): the
tool-call parser finds calls by it, so dropping it would turn a call into prose.
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT = "\ufffd"
_CONTEXT_TOKENS = 5  # prompt tokens decoded along with the first output tokens


class IncrementalDetokenizer:
    """Turns output token ids, one at a time, into finalized text deltas."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stops = StopStrings(stop)
        self.tokens: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # window start
        self._read_offset = len(self.tokens)  # tokens before this are already emitted
        self.text = ""  # everything emitted so far
        self._dropped = _dropped_specials(tokenizer)  # None: no marker is a special token here

    def add(self, token_id: int) -> str:
        """Add one output token; return the text it finalizes (often '', never half a char)."""
        if self.stopped:
            return ""
        self.tokens.append(token_id)
        new = self._new_utf8_text(final=False)
        return self._emit(new) if new else ""

    @property
    def stopped(self) -> bool:
        """True once a stop string has completed."""
        return self.stops.hit is not None

    @property
    def stop_string(self) -> str | None:
        """The stop string that ended the output, if one did."""
        return self.stops.hit

    def flush(self) -> str:
        """End of sequence: release held text (an incomplete character decodes as U+FFFD)."""
        if self.stopped:
            return ""
        out = self.stops.push(self._new_utf8_text(final=True)) + self.stops.flush()
        self.text += out
        return out

    def _decode(self, ids: list[int]) -> str:
        if self._dropped is None:
            return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        kept = [i for i in ids if i not in self._dropped]  # the markers stay, spaced as generated
        return self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _new_utf8_text(self, final: bool) -> str:
        if self._read_offset == len(self.tokens):
            return ""
        before = self._decode(self.tokens[self._prefix_offset:self._read_offset])
        full = self._decode(self.tokens[self._prefix_offset:])
        if not final and full.endswith(REPLACEMENT):
            return ""  # a character is split across tokens: wait for its remaining bytes
        if not full.startswith(before):  # rare tokenizer quirk: fall back to the longest common prefix
            before = full[:_common_prefix(before, full)]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.tokens)
        return full[len(before):]

    def _emit(self, new: str) -> str:
        out = self.stops.push(new)
        self.text += out
        return out


class StopStrings:
    """Cut streamed text at the first stop string, holding back the longest tail that could
    still grow into one. The engine's detokenizer and the token-level serving backends
    (llama.cpp) both stream through it."""

    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        self.stops = [s for s in stops if s]
        self.held = ""  # text that may be the start of a stop string
        self.hit: str | None = None  # the stop string that ended the text

    def push(self, piece: str) -> str:
        """Add text; return the part now safe to emit (after a hit, nothing more)."""
        if self.hit is not None:
            return ""
        buf = self.held + piece
        cut = self._find(buf)
        if cut is not None:
            self.held = ""
            return buf[:cut]
        keep = partial_stop_len(buf, self.stops)
        self.held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep]

    def flush(self) -> str:
        """The held-back tail, at the end of generation (nothing after a hit)."""
        out, self.held = self.held, ""
        return out

    def _find(self, buf: str) -> int | None:
        """Index of the earliest completed stop string in buf (recorded in `hit`), or None."""
        best = None
        for s in self.stops:
            i = buf.find(s)
            if i >= 0 and (best is None or i < best):
                best, self.hit = i, s
        return best


def partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper start of one of `stops`: the
    text to hold back because it may still grow into a stop string (or a tag)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


_DROPPED: dict[int, tuple[Any, frozenset[int] | None]] = {}  # id(tokenizer) -> (tokenizer, ids)


def _dropped_specials(tokenizer: Any) -> frozenset[int] | None:
    """Ids of the special tokens the text leaves out: all but the tool-call markers; None when
    no marker is a special token of `tokenizer` (then decoding skips every special token)."""
    key = id(tokenizer)
    if key not in _DROPPED or _DROPPED[key][0] is not tokenizer:
        _DROPPED[key] = (tokenizer, _find_dropped(tokenizer))
    return _DROPPED[key][1]


def _find_dropped(tokenizer: Any) -> frozenset[int] | None:
    from tunelab.tools.formats import CALL_MARKERS  # here: tools.parser imports this module

    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = {i for i, t in added.items() if getattr(t, "special", False)}
    special |= set(getattr(tokenizer, "all_special_ids", None) or ())
    markers = {added[i].content for i in special if i in added} & set(CALL_MARKERS)
    if not markers:
        return None
    return frozenset(i for i in special if i not in added or added[i].content not in markers)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
