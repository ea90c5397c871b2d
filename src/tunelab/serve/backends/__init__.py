"""Serving backends behind one interface: engine (default), llamacpp (GGUF), vllm."""

from __future__ import annotations

from tunelab.serve.backends.base import Backend, Capabilities, Delta, Prompt
from tunelab.serve.config import ServeConfig

__all__ = ["Backend", "Capabilities", "Delta", "Prompt", "make_backend"]


def make_backend(config: ServeConfig) -> Backend:
    """The backend `config.backend` names (not loaded yet: the app loads it in a thread); with
    `config.models`, the library that loads each model on demand through that backend."""
    if config.models:
        from tunelab.serve.library_service import LibraryBackend

        return LibraryBackend(config)
    if config.backend == "llamacpp":
        from tunelab.serve.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(config)
    if config.backend == "vllm":
        from tunelab.serve.backends.vllm import VllmBackend

        return VllmBackend(config)
    from tunelab.serve.backends.engine import EngineBackend

    return EngineBackend(config)
