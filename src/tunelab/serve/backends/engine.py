"""The built-in engine (default): continuous batching, paged KV cache, multi-LoRA.

One thread owns the model and calls `LLMEngine.step()` while work exists; the
event loop only adds and aborts requests (the engine's lock makes that safe) and
receives each sequence's new text through an asyncio queue.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from tunelab.serve.backends.base import Backend, Capabilities, Delta, GenParams, Prompt, TokenLogprob
from tunelab.serve.config import ServeConfig


class _Waiter:
    """One sequence the event loop is waiting on, and how much of it was already sent."""

    def __init__(self, seq: Any, loop: asyncio.AbstractEventLoop):
        self.seq, self.loop = seq, loop
        self.out: asyncio.Queue = asyncio.Queue()
        self.sent_tokens = 0
        self.done = False


class EngineBackend(Backend):
    """tunelab's own engine serving a Hugging Face model directory."""

    name = "engine"
    capabilities = Capabilities(adapters=True, logprobs=True,
                                note="continuous batching, paged KV cache, multi-LoRA, logprobs")

    def __init__(self, config: ServeConfig):
        self.config = config
        self.waiters: dict[str, _Waiter] = {}
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Load the model, tokenizer and chat template; start the stepping thread."""
        from tunelab.data.templates import ChatTemplate
        from tunelab.engine.config import EngineConfig
        from tunelab.engine.engine import LLMEngine

        cfg = EngineConfig(dtype=self.config.dtype, device=self.config.device,
                           max_model_len=self.config.context_length)
        self.engine = LLMEngine(self.config.model, config=cfg)
        self.tokenizer = self.engine.tokenizer
        model_dir = Path(self.engine.model_dir)
        self.template = ChatTemplate.for_model(model_dir, self.config.chat_template)
        self.stop_ids = self.template.stop_token_ids(self.tokenizer)
        self.context_length = self.engine.config.max_model_len
        self.model_path, self.created = str(model_dir), int(model_dir.stat().st_mtime)
        self.model_id = self.config.served_name or model_dir.name
        self._paths: dict[str, str] = {}
        self._thread = threading.Thread(target=self._loop, name="engine-step", daemon=True)
        self._thread.start()

    # ---- prompts --------------------------------------------------------------------------

    def encode_chat(self, messages: list[dict], template_kwargs: dict[str, Any]) -> Prompt:
        """The shared chat template renders; the same encoding as training."""
        from tunelab.data.templates import encode_text

        text = self.template.render(messages, add_generation_prompt=True, **template_kwargs)
        return Prompt(encode_text(self.tokenizer, text), text)

    def encode_text(self, text: str) -> Prompt:
        """Raw completion prompt: the tokenizer adds BOS the way the model expects."""
        return Prompt(list(self.tokenizer.encode(text)), text)

    # ---- generation -----------------------------------------------------------------------

    async def generate(self, request_id: str, prompt: list[int], params: GenParams,
                       adapter: str | None = None) -> AsyncIterator[Delta]:
        """Add the request to the engine and relay its deltas as steps produce them."""
        seq = self.engine.add_request(request_id, prompt, self._sampling(params), adapter)[0]
        waiter = _Waiter(seq, asyncio.get_running_loop())
        self.waiters[request_id] = waiter
        self._wake.set()
        try:
            while True:
                delta = await waiter.out.get()
                if isinstance(delta, BaseException):
                    raise delta
                yield delta
                if delta.finish_reason:
                    return
        finally:
            self.waiters.pop(request_id, None)
            if not seq.is_finished:  # consumer left early: free its KV blocks
                self.engine.abort(request_id)

    def _sampling(self, p: GenParams):
        from tunelab.engine.config import SamplingParams

        return SamplingParams(
            max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
            min_p=p.min_p, repetition_penalty=p.repetition_penalty,
            presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty, seed=p.seed,
            stop=p.stop, stop_token_ids=[] if p.ignore_eos else self.stop_ids,  # ignore_eos: fixed length
            ignore_eos=p.ignore_eos, logprobs=p.logprobs)

    def abort(self, request_id: str) -> None:
        """Finish the request's sequence now, freeing its KV blocks."""
        self.engine.abort(request_id)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop:
            if not self.engine.has_unfinished():
                self._publish()  # aborted sequences still owe their waiters a final delta
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as err:  # noqa: BLE001 - fail the requests, keep serving
                self._fail_all(err)
            self._publish()

    def _publish(self) -> None:
        for waiter in list(self.waiters.values()):
            if waiter.done:
                continue
            delta = self._delta(waiter)
            if delta is not None:
                waiter.done = delta.finish_reason is not None
                waiter.loop.call_soon_threadsafe(waiter.out.put_nowait, delta)

    def _delta(self, w: _Waiter) -> Delta | None:
        seq = w.seq
        new_ids = seq.output_ids[w.sent_tokens:]
        finished = seq.is_finished
        if not new_ids and not finished:
            return None
        logprobs = [self._logprob(lp) for lp in seq.logprobs[w.sent_tokens:len(seq.output_ids)]]
        w.sent_tokens += len(new_ids)
        return Delta(seq.take_delta(), list(new_ids), logprobs or None,
                     seq.finish_reason if finished else None)

    def _logprob(self, lp: Any) -> TokenLogprob:
        piece = lambda t: self.tokenizer.decode([t])
        return TokenLogprob(piece(lp.token_id), float(lp.logprob),
                            [(piece(t), float(v)) for t, v in lp.top])

    def _fail_all(self, err: Exception) -> None:
        for rid, waiter in list(self.waiters.items()):
            self.engine.abort(rid)
            waiter.done = True
            waiter.loop.call_soon_threadsafe(waiter.out.put_nowait, RuntimeError(str(err)))

    # ---- adapters, stats, lifecycle -------------------------------------------------------

    def add_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter; requests may name it in `model` right after."""
        self.engine.add_adapter(name, path)
        self._paths[name] = str(path)

    def remove_adapter(self, name: str) -> None:
        """Unload; the engine aborts sequences still using it."""
        self.engine.remove_adapter(name)
        self._paths.pop(name, None)
        self._wake.set()

    def adapters(self) -> dict[str, str]:
        """name -> path of loaded adapters."""
        return dict(getattr(self, "_paths", {}))

    def stats(self) -> dict[str, float]:
        """The engine's scheduler stats (running, waiting, kv_usage, preemptions, ...)."""
        return self.engine.stats()

    def describe(self) -> dict[str, Any]:
        """Facts about the model for /api/show and /api/tags."""
        hf = self.engine.hf_config
        params = sum(p.numel() for p in self.engine.model.parameters())
        size = sum(f.stat().st_size for f in Path(self.model_path).glob("*.safetensors"))
        return {"family": getattr(hf, "model_type", ""), "format": "safetensors",
                "parameter_size": _human(params), "quantization": str(self.engine.dtype).split(".")[-1],
                "size": size, "template": self.template.source}

    def close(self) -> None:
        """Stop stepping; abort what is left."""
        for rid in list(self.waiters):
            self.engine.abort(rid)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
