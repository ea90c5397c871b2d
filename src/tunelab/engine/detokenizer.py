"""Streaming detokenization that never emits broken UTF-8 or any part of a stop string.

Two layers, each holding text back for its own reason:

1. UTF-8: a byte-level token can carry half a character. Each new token's text is
   the decode of a small window of recent tokens minus the decode of the window
   without the new ones (so sentencepiece's leading-space rules see context); while
   that decode ends in U+FFFD the character is incomplete and nothing is emitted.
2. Stop strings: the longest suffix of the text that could still grow into a stop
   string is held back. When a stop string completes, the text before it is emitted,
   the rest dropped, and `stopped` is set so the sequence finishes with "stop".

`flush()` at the end of a sequence releases whatever is still held back.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"
_CONTEXT_TOKENS = 5  # prompt tokens decoded along with the first output tokens


class IncrementalDetokenizer:
    """Turns output token ids, one at a time, into finalized text deltas."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.tokens: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # window start
        self._read_offset = len(self.tokens)  # tokens before this are already emitted
        self._held = ""  # finalized text held back as a possible stop-string start
        self.text = ""  # everything emitted so far
        self.stopped = False
        self.stop_string: str | None = None  # the stop string that ended the output

    def add(self, token_id: int) -> str:
        """Add one output token; return the text it finalizes (often '', never half a char)."""
        if self.stopped:
            return ""
        self.tokens.append(token_id)
        new = self._new_utf8_text(final=False)
        return self._emit(new) if new else ""

    def flush(self) -> str:
        """End of sequence: release held text (an incomplete character decodes as U+FFFD)."""
        if self.stopped:
            return ""
        new = self._new_utf8_text(final=True)
        out = self._emit(new)
        if not self.stopped:
            out += self._held
            self.text += self._held
            self._held = ""
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

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
        buf = self._held + new
        cut = self._find_stop(buf)
        if cut is not None:
            out, self._held, self.stopped = buf[:cut], "", True
        else:
            keep = self._stop_prefix_len(buf)
            out, self._held = buf[:len(buf) - keep], buf[len(buf) - keep:]
        self.text += out
        return out

    def _find_stop(self, buf: str) -> int | None:
        """Index of the earliest completed stop string in buf, or None."""
        best = None
        for s in self.stop:
            i = buf.find(s)
            if i >= 0 and (best is None or i < best):
                best, self.stop_string = i, s
        return best

    def _stop_prefix_len(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(buf)), longest, -1):
                if buf.endswith(s[:k]):
                    longest = k
                    break
        return longest


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
