"""UTF-8-safe decoding used by token-level backends (stop strings: tests/unit/engine/test_stop_strings.py)."""

from tunelab.serve.backends.text import Utf8Stream


def test_utf8_multibyte_across_tokens():
    u, data = Utf8Stream(), "é😀".encode()
    out = "".join(u.push(data[i:i + 1]) for i in range(len(data))) + u.flush()
    assert out == "é😀"
