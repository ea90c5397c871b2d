"""tunelab: fine-tune open LLMs on your own data and serve them locally.

The public API is small and imported lazily, so `import tunelab` stays cheap:
`resolve_model`, `LLM` + `SamplingParams` (+ `LoRARequest`, as in vLLM), `TrainConfig` (run it with `tunelab.train.train`)
and `ServeConfig` (run it with `tunelab.serve.serve`).
"""

from __future__ import annotations

from tunelab.compat import quiet_bitsandbytes
from tunelab.lazy import lazy_getattr

quiet_bitsandbytes()

__version__ = "0.1.0"

_LAZY = {
    "resolve_model": ("tunelab.store.resolve", "resolve_model"),
    "LLM": ("tunelab.engine.llm", "LLM"),
    "SamplingParams": ("tunelab.engine.config", "SamplingParams"),
    "LoRARequest": ("tunelab.engine.lora_request", "LoRARequest"),
    "TrainConfig": ("tunelab.train.config", "TrainConfig"),
    "ServeConfig": ("tunelab.serve.config", "ServeConfig"),
}


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = list(_LAZY)
