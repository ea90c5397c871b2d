"""Errors raised while locating runs, merging and exporting; each names the file or parameter."""

from tunelab.errors import TunelabError


class RunError(TunelabError):
    """A run directory is missing, unfinished, or its adapter does not fit its base model."""


class ExportError(TunelabError):
    """An export was asked for something it cannot write (format, quant, architecture)."""


class UnsupportedArchitecture(ExportError):
    """The model family has no GGUF mapping; raised before anything is written."""
