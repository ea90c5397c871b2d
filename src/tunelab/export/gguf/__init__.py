"""GGUF export: HF model directory -> one llama.cpp-loadable file."""

from tunelab.export.gguf.writer import write_gguf

__all__ = ["write_gguf"]
