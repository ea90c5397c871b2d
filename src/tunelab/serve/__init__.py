"""The OpenAI- and Ollama-compatible server: `serve(ServeConfig(...))` runs until Ctrl-C.

Names load lazily so importing the package does not import FastAPI or torch.
"""

from __future__ import annotations

from tunelab.lazy import lazy_getattr

_LAZY = {
    "serve": ("tunelab.serve.server", "serve_forever"),
    "ServeConfig": ("tunelab.serve.config", "ServeConfig"),
    "create_app": ("tunelab.serve.app", "create_app"),
}


__getattr__ = lazy_getattr(__name__, _LAZY)
