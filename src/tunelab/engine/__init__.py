"""The inference engine: sequences, paged KV blocks, scheduler, sampling, runner, LLM.

Names are imported lazily so `tunelab.engine.scheduler` and `.block_manager` stay
importable (and testable) without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EngineConfig": "tunelab.engine.config",
    "SamplingParams": "tunelab.engine.config",
    "Sequence": "tunelab.engine.sequence",
    "SequenceStatus": "tunelab.engine.sequence",
    "TokenLogprob": "tunelab.engine.sequence",
    "BlockManager": "tunelab.engine.block_manager",
    "Scheduler": "tunelab.engine.scheduler",
    "Batch": "tunelab.engine.scheduler",
    "IncrementalDetokenizer": "tunelab.engine.detokenizer",
    "sample": "tunelab.engine.sampling",
    "LLM": "tunelab.engine.llm",
    "RequestOutput": "tunelab.engine.llm",
    "AsyncEngine": "tunelab.engine.async_engine",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tunelab.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
