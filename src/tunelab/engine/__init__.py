"""The inference engine: sequences, paged KV blocks, scheduler, sampling, runner, LLM.

Names are imported lazily so `tunelab.engine.scheduler` and `.block_manager` stay
importable (and testable) without torch.
"""

from __future__ import annotations

from tunelab.lazy import lazy_getattr

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
    "RequestOutput": "tunelab.engine.outputs",
    "CompletionOutput": "tunelab.engine.outputs",
    "LoRARequest": "tunelab.engine.lora_request",
    "AsyncEngine": "tunelab.engine.async_engine",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
