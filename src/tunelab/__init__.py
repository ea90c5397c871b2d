"""tunelab: fine-tune open LLMs on your own data and serve them locally.

The public API is small and imported lazily, so `import tunelab` stays cheap:
`resolve_model`, `LLM` + `SamplingParams`, `TrainConfig` (run it with `tunelab.train.train`)
and `ServeConfig` (run it with `tunelab.serve.serve`).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "resolve_model": ("tunelab.store.resolve", "resolve_model"),
    "LLM": ("tunelab.engine.llm", "LLM"),
    "SamplingParams": ("tunelab.engine.config", "SamplingParams"),
    "TrainConfig": ("tunelab.train.config", "TrainConfig"),
    "ServeConfig": ("tunelab.serve.config", "ServeConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")


__all__ = list(_LAZY)
