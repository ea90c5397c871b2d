"""The serving core shared by the OpenAI and Ollama routes: admission, limits, metrics, n>1.

Routes build a prompt and `SamplingParams`, then iterate `Service.stream`. This module
bounds the queue (429 when full), checks the context window, records latency
metrics, and aborts the backend request whenever the consumer stops early
(client disconnect, error, shutdown), so KV blocks are never leaked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, AsyncIterator

from tunelab.engine.config import SamplingParams
from tunelab.serve.backends.base import Backend, Delta
from tunelab.serve.config import ServeConfig
from tunelab.serve.errors import APIError, bad_request, model_not_found, not_ready, overloaded
from tunelab.serve.metrics import ServerMetrics


@dataclasses.dataclass
class Target:
    """What a request's `model` resolved to."""

    name: str
    adapter: str | None


class Service:
    """Owns the backend handle, readiness, the pending-request bound and metrics."""

    def __init__(self, backend: Backend, config: ServeConfig):
        self.backend, self.config = backend, config
        self.metrics = ServerMetrics()
        self.ready = False
        self.load_error: str | None = None
        self.pending = 0
        self.active: set[str] = set()
        self.stopping = False  # the shutdown deadline passed: every open request is being ended
        self.aliases: dict[str, str] = {}  # other name -> served name (Ollama's /api/copy)

    # ---- checks -------------------------------------------------------------------------

    def require_ready(self) -> None:
        """503 until the model has loaded."""
        if not self.ready:
            raise not_ready()

    def resolve(self, name: str) -> Target:
        """The base model or an adapter by `model` name (Ollama's ':latest' suffix allowed)."""
        self.require_ready()
        base = self.backend.model_id
        bare = name[: -len(":latest")] if name.endswith(":latest") else name
        bare = self.aliases.get(bare, bare)
        if bare in (base, "") or (bare == self.config.model and not self.config.served_name):
            return Target(base, None)  # as in vLLM: a model given as a path answers to that path too
        if bare in self.backend.adapters():
            return Target(bare, bare)
        raise model_not_found(name, self.names())

    def names(self) -> list[str]:
        """Every name a request may use: the base model, its adapters, then other names."""
        return [self.backend.model_id, *self.backend.adapters(), *self.aliases]

    def sampling_defaults(self, target: Target) -> dict[str, Any]:
        """The served model's own sampling defaults (its Modelfile PARAMETERs, saved with its chat
        template), engine-named; every API's `to_sampling_params` takes them, request values win."""
        from tunelab.serve.protocol import OllamaOptions

        options = getattr(self.backend.chat_template(target.adapter), "options", None)
        return OllamaOptions.model_validate(options).engine_defaults() if options else {}

    def context_length(self) -> int:
        """The context window requests are checked against."""
        return self.config.engine.max_model_len or self.backend.context_length

    def max_tokens_for(self, prompt_len: int, requested: int | None, param: str) -> int:
        """Validate the prompt and max_tokens against the context; never truncate silently."""
        ctx = self.context_length()
        if prompt_len >= ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens, but the prompt "
                           f"has {prompt_len} tokens. Shorten the prompt.", param=param,
                           code="context_length_exceeded")
        if requested is None:
            return min(self.config.default_max_tokens, ctx - prompt_len)
        if requested > self.config.max_tokens_limit:
            raise bad_request(f"max_tokens is {requested}, above this server's limit of "
                              f"{self.config.max_tokens_limit}", param="max_tokens")
        if prompt_len + requested > ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens, but "
                           f"{prompt_len + requested} were requested ({prompt_len} in the prompt, "
                           f"{requested} for the completion).", param="max_tokens",
                           code="context_length_exceeded")
        return requested

    def check_n(self, n: int) -> None:
        """Bound the number of choices."""
        if n > self.config.max_n:
            raise bad_request(f"n is {n}, above this server's limit of {self.config.max_n}", param="n")

    def check_stop(self, stop: list[str], param: str) -> None:
        """Bound the number and length of stop strings."""
        cfg = self.config
        if len(stop) > cfg.max_stop_sequences:
            raise bad_request(f"{param} has {len(stop)} strings, above this server's limit of "
                              f"{cfg.max_stop_sequences}", param=param)
        longest = max(stop, key=len, default="")
        if len(longest) > cfg.max_stop_length:
            raise bad_request(f"{param} holds a string of {len(longest)} characters, above this "
                              f"server's limit of {cfg.max_stop_length}", param=param)

    def check_logprobs(self, wanted: bool) -> None:
        """400 when logprobs are asked of a backend that has none."""
        if wanted and not self.backend.capabilities.logprobs:
            raise bad_request(f"the {self.backend.name} backend does not return logprobs",
                              param="logprobs")

    # ---- generation ---------------------------------------------------------------------

    def admit(self, n: int) -> "Ticket":
        """Reserve n slots of the bounded queue or answer 429; release the ticket when done."""
        if self.pending + n > self.config.max_pending:
            raise overloaded(self.pending)
        self.pending += n
        return Ticket(self, n)

    async def stream(self, rid: str, prompt: list[int], params: SamplingParams,
                     target: Target, images: list | None = None) -> AsyncIterator[tuple[int, Delta]]:
        """(choice index, delta) pairs for the params.n sequences; admit(n) first. `images` (PIL)
        go with the prompt to a backend that `takes_images` (serve/images.py checked that)."""
        n = params.n
        gens = [self._one(f"{rid}-{i}", prompt, _choice(params, i), target.adapter, images) for i in range(n)]
        try:
            if n == 1:
                async for delta in gens[0]:
                    yield 0, delta
            else:
                async for item in _merge(gens):
                    yield item
        finally:
            for gen in gens:  # close now, not at garbage collection, so aborts happen promptly
                await gen.aclose()

    async def _one(self, seq_id: str, prompt: list[int], params: SamplingParams,
                   adapter: str | None, images: list | None = None) -> AsyncIterator[Delta]:
        start, last, first = time.perf_counter(), None, None
        gaps: list[float] = []
        tokens, reason = 0, "abort"
        self.active.add(seq_id)
        try:
            extra = {"images": images} if images else {}  # only a backend that takes images gets them
            async for delta in self.backend.generate(seq_id, prompt, params, adapter, **extra):
                now = time.perf_counter()
                if delta.token_ids:
                    if first is None:
                        first = now - start
                    elif last is not None:
                        gaps += [(now - last) / len(delta.token_ids)] * len(delta.token_ids)
                    last = now
                    tokens += len(delta.token_ids)
                reason = delta.finish_reason or reason
                yield delta
        except Exception:  # rejected or failed by the backend: an error, not a client abort
            reason = "error"
            raise
        finally:
            self.active.discard(seq_id)
            if reason == "abort":  # consumer left early: free the sequence's KV blocks now
                self.backend.abort(seq_id)
            self.metrics.observe_request(first, gaps, time.perf_counter() - start, len(prompt),
                                         tokens, reason)

    def abort_all(self) -> None:
        """Cancel every in-flight sequence (shutdown)."""
        for seq_id in list(self.active):
            self.backend.abort(seq_id)

    def end_all(self) -> None:
        """The shutdown deadline: streams end with finish_reason 'abort', the rest get a 503."""
        self.stopping = True
        self.abort_all()


class Ticket:
    """A reservation in the bounded queue; release() is idempotent."""

    def __init__(self, service: Service, n: int):
        self.service, self._n = service, n

    def release(self) -> None:
        """Give the slots back (once)."""
        if self._n:
            self.service.pending -= self._n
            self._n = 0


def _choice(params: SamplingParams, i: int) -> SamplingParams:
    """Choice i of n is one backend sequence (n=1) with seed+i, so choices differ but repeat."""
    return params.replace(n=1, seed=None if params.seed is None else params.seed + i)


async def _merge(gens: list[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Interleave several delta streams as they produce; cancel all if the consumer leaves."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, gen: AsyncIterator[Delta]) -> None:
        try:
            async for delta in gen:
                await queue.put((i, delta, None))
        except Exception as err:  # surface backend errors to the consumer
            await queue.put((i, None, err))
        finally:
            await queue.put((i, None, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    try:
        live = len(tasks)
        while live:
            i, delta, err = await queue.get()
            if err is not None:
                raise err
            if delta is None:
                live -= 1
                continue
            yield i, delta
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
