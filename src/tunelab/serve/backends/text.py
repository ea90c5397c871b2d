"""Text helpers for backends that produce raw tokens: stop strings and UTF-8-safe decoding."""

from __future__ import annotations

import codecs


class StopStrings:
    """Cut output at the first stop string, holding back text that might still begin one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.emitted = "", 0

    def push(self, piece: str) -> tuple[str, bool]:
        """Add text; return (text now safe to emit, whether a stop string was hit)."""
        self.text += piece
        hits = [at for at in (self.text.find(s, self.emitted) for s in self.stops) if at >= 0]
        if hits:
            out, self.emitted = self.text[self.emitted:min(hits)], min(hits)
            return out, True
        safe = max(self.emitted, len(self.text) - self.hold)
        out, self.emitted = self.text[self.emitted:safe], safe
        return out, False

    def flush(self) -> str:
        """The held-back tail, at the end of generation."""
        out, self.emitted = self.text[self.emitted:], len(self.text)
        return out


class Utf8Stream:
    """Bytes of successive tokens -> text, never splitting a multi-byte character."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        """Decode what is complete so far."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever bytes remain (as replacement characters if incomplete)."""
        return self._decoder.decode(b"", final=True)
