"""The built-in engine (default): continuous batching, paged KV cache, multi-LoRA.

`AsyncEngine` owns the model on its one engine thread and streams each request's
deltas to the event loop; this backend only encodes prompts, adds the template's
stop ids to the request's `SamplingParams`, and decodes the engine's token-id logprobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

from tunelab.engine.config import SamplingParams
from tunelab.engine.sequence import TokenLogprob
from tunelab.serve.backends.base import Backend, Capabilities, Delta, HFTokenizerPrompts
from tunelab.serve.config import ServeConfig


class EngineBackend(HFTokenizerPrompts, Backend):
    """tunelab's own engine serving a Hugging Face model directory."""

    name = "engine"
    capabilities = Capabilities(adapters=True, logprobs=True, embeddings=True, structured_outputs=True,
                                note="continuous batching, paged KV cache, multi-LoRA, logprobs, embeddings")

    def __init__(self, config: ServeConfig):
        self.config = config
        self.engine: Any = None  # the AsyncEngine, once loaded

    def load(self) -> None:
        """Load the model, tokenizer and chat template; the engine thread starts with it. llguidance's
        tokenizer (constrained decoding) is built by the first request that needs it, not here."""
        from tunelab.engine.async_engine import AsyncEngine
        from tunelab.engine.warmup import warm_up_engine

        self.engine = AsyncEngine(self.config.model, config=self.config.engine)
        self.tokenizer = self.engine.tokenizer
        model_dir = Path(self.engine.model_dir)
        self.load_templates(model_dir)
        self.context_length = self.engine.engine.config.max_model_len
        self.model_path, self.created = str(model_dir), int(model_dir.stat().st_mtime)
        self.model_id = self.config.served_name or model_dir.name
        self.num_params = sum(p.numel() for p in self.engine.engine.model.parameters())  # once, not per /api/show
        warm_up_engine(self.engine.engine)

    # ---- generation -----------------------------------------------------------------------

    def takes_images(self) -> bool:
        """A Qwen2.5-VL or Gemma 3 VLM takes images (vision/family.SERVED)."""
        from tunelab.vision.family import serves_images

        return serves_images(self.model_path)

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams,
                       adapter: str | None = None, images: list | None = None) -> AsyncIterator[Delta]:
        """Relay the engine's deltas; leaving early aborts the request (the engine frees its KV)."""
        params = params.stopping_at(self.stop_ids(adapter))
        async for d in self.engine.generate(request_id, prompt, params, adapter, images=images):
            if d.error:  # the engine failed the request (step error, no KV memory)
                raise RuntimeError(d.error)
            logprobs = [self._logprob(lp) for lp in d.logprobs or ()]
            stop = d.stop_reason if isinstance(d.stop_reason, str) else None
            yield Delta(d.text, list(d.token_ids), logprobs or None, d.finish_reason, stop)

    async def embed(self, prompts: list[list[int]], adapter: str | None = None) -> Any:
        """(B, D) float32: the engine pools the final hidden states between its generation steps."""
        import torch

        return torch.stack(await self.engine.embed(prompts, adapter)).numpy()

    def abort(self, request_id: str) -> None:
        """Finish the request now, freeing its KV blocks; its stream ends with 'abort'."""
        if self.engine is not None:
            self.engine.abort(request_id)

    def _logprob(self, lp: TokenLogprob) -> TokenLogprob:
        return lp.decoded(lambda t: self.tokenizer.decode([t]))

    # ---- adapters, stats, lifecycle -------------------------------------------------------

    def add_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter with its chat template; requests may name it in `model` right after."""
        self.remember_template(name, path)  # first: a bad template loads nothing, no request races it
        self.engine.add_adapter(name, path)

    def remove_adapter(self, name: str) -> None:
        """Unload; the engine aborts sequences still using it."""
        self.engine.remove_adapter(name)
        self.remember_template(name, None)

    def adapters(self) -> dict[str, str]:
        """name -> path of loaded adapters."""
        return self.engine.adapters() if self.engine is not None else {}

    def stats(self) -> dict[str, float]:
        """The engine's scheduler stats (running, waiting, kv_usage, preemptions, ...)."""
        return self.engine.stats()

    def describe(self) -> dict[str, Any]:
        """Facts about the model for /api/show and /api/tags."""
        core = self.engine.engine
        hf = core.hf_config
        size = sum(f.stat().st_size for f in Path(self.model_path).glob("*.safetensors"))
        return {"family": getattr(hf, "model_type", ""), "format": "safetensors",
                "parameter_size": _human(self.num_params), "quantization": str(core.dtype).split(".")[-1],
                "size": size, "template": self.template.source, "pooling": core.pooling.describe(),
                "device": str(core.device),
                "embedding_length": self.embedding_length()}

    def embedding_length(self) -> int:
        """Length of this model's embeddings (hidden size times the number of pooling modes)."""
        core = self.engine.engine
        return core.model.spec.hidden_size * len(core.pooling.modes)

    def close(self) -> None:
        """Abort what uvicorn's graceful period left running, then stop the engine thread."""
        if self.engine is not None:
            self.engine.shutdown()


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
