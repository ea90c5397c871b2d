"""Lazy package attributes (PEP 562), so `import tunelab` never pulls in torch or FastAPI."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, table: dict[str, str | tuple[str, str]]) -> Callable[[str], Any]:
    """A module `__getattr__` importing `table[name]` on first use.

    A value is `(module, attribute)`, or just `module` when the attribute is named `name`.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            module, attr = (table[name], name) if isinstance(table[name], str) else table[name]
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
