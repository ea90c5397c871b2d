"""Errors raised while locating runs, merging and exporting; each names the file or parameter."""

from tunelab.errors import RunError, TunelabError

__all__ = ["ExportError", "RunError", "UnsupportedArchitecture"]  # RunError lives with the run dir


class ExportError(TunelabError):
    """An export was asked for something it cannot write (format, quant, architecture)."""


class UnsupportedArchitecture(ExportError):
    """The model family has no GGUF mapping; raised before anything is written."""
