"""Data errors: each names the file, the line and the field that is wrong."""

from __future__ import annotations

from tunelab.errors import TunelabError


class DataError(TunelabError):
    """A dataset row or file is invalid; `reason` groups it in reports, `source:line` locates it."""

    def __init__(self, reason: str, message: str, source: str = "", line: int = 0, field: str = ""):
        where = f"{source}:{line}" if line else source
        parts = [p for p in (where, field and f"field '{field}'", message) if p]
        super().__init__(": ".join(parts))
        self.reason, self.source, self.line, self.field = reason, source, line, field


class TemplateError(TunelabError):
    """A chat template is unknown, unreadable or fails to render."""
