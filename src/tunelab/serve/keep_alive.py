"""Ollama's `keep_alive`: how long a model stays loaded after a request, as Ollama reads it.

A number is seconds; a string is a Go duration ("30s", "5m", "1h30m", "500ms") or a bare number
of seconds; 0 unloads the model once the request is done; any negative value keeps it forever.
"""

from __future__ import annotations

import re

from tunelab.errors import InvalidRequest

FOREVER = None  # the parsed value of a negative keep_alive
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: float | int | str, param: str) -> float | None:
    """Seconds to stay loaded (None = forever); a malformed value is an InvalidRequest naming `param`."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{param} must be a duration like '5m' or a number of seconds, got {value}",
                             param=param)
    seconds = value if isinstance(value, (int, float)) else _duration(str(value).strip(), param)
    return FOREVER if seconds < 0 else float(seconds)


def _duration(text: str, param: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)  # a bare number: seconds
    except ValueError:
        pass
    parts = _PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise InvalidRequest(f"{param}: '{text}' is not a duration (e.g. 30s, 5m, 1h30m, a number of "
                             f"seconds, 0 to unload now, -1 to keep forever)", param=param)
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)
