"""GGUF export: HF model directory -> one llama.cpp-loadable file."""

from tunelab.lazy import lazy_getattr

# Lazy, because the writer imports export.quantize, which imports this package's kquants:
# an eager import here made `import tunelab.export.quantize` on its own a circular import.
__getattr__ = lazy_getattr(__name__, {"write_gguf": "tunelab.export.gguf.writer"})
__all__ = ["write_gguf"]
