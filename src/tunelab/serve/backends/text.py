"""UTF-8-safe decoding for backends that produce raw token bytes (stop strings: engine.detokenizer)."""

from __future__ import annotations

import codecs


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
