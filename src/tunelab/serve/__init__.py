"""The OpenAI- and Ollama-compatible server: `serve(ServeConfig(...))` runs until Ctrl-C.

Names load lazily so importing the package does not import FastAPI or torch.
"""

from __future__ import annotations

_LAZY = {
    "serve": ("tunelab.serve.server", "serve_forever"),
    "ServeConfig": ("tunelab.serve.config", "ServeConfig"),
    "create_app": ("tunelab.serve.app", "create_app"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tunelab.serve' has no attribute {name!r}")
