"""`AsyncEngine`: the engine behind the HTTP server, streaming deltas to asyncio callers.

One background thread owns the model and loops `step()` while there is work; asyncio code
only enqueues requests and reads per-request queues. Each step's news for a request is
handed to the caller's event loop with `call_soon_threadsafe`:

    handler --generate()--> engine.add_request --(thread: step, step, ...)--> Delta queue --> handler
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from tunelab.engine.config import EngineConfig, SamplingParams
from tunelab.engine.embedding import EmbedJob
from tunelab.engine.engine import LLMEngine
from tunelab.engine.sequence import Sequence, TokenLogprob


@dataclass
class Delta:
    """What one completion of a request produced since the last delta."""

    request_id: Any
    index: int  # which of the n completions
    text: str  # new text (UTF-8 safe, stop strings never included)
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # set on the last delta: "stop" | "length" | "abort"
    error: str | None = None  # set when the engine aborted the request (e.g. no KV memory)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # so far, for this completion
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it (last delta)


@dataclass
class _Request:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    sent: dict[int, int] = field(default_factory=dict)  # completion index -> tokens delivered
    done: set[int] = field(default_factory=set)  # completion indexes whose final delta went out


class AsyncEngine:
    """A model served to asyncio code; see `generate`, `abort`, `add_adapter`, `stats`.

    Build it from a model (plus `dtype`, `device` and EngineConfig fields), from a
    ready `config`, or around an existing `engine`.
    """

    def __init__(self, model: str | Path | None = None, adapters: dict[str, str | Path] | None = None,
                 dtype: str = "auto", device: str = "auto", engine: LLMEngine | None = None,
                 config: EngineConfig | None = None, **engine_cfg: Any):
        from tunelab.config import build

        if engine is None:
            cfg = config or build(EngineConfig, {**engine_cfg, "dtype": dtype, "device": device})
            engine = LLMEngine(model, None, cfg)
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_dir = engine.model_dir
        self._requests: dict[Any, _Request] = {}
        self._paths: dict[str, str] = {name: str(path) for name, path in engine.lora.adapters.items()}
        self._publishing = threading.Lock()  # the engine thread and abort() both publish
        self._wake = threading.Condition()
        self._stopped = False
        self._error: str | None = None
        self._jobs: deque[tuple[EmbedJob, asyncio.Future]] = deque()  # embeddings, run between steps
        self._thread = threading.Thread(target=self._loop, name="tunelab-engine", daemon=True)
        self._thread.start()
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    # ---- public API -------------------------------------------------------------------------

    async def generate(self, request_id: Any, prompt_ids: list[int], params: SamplingParams,
                       adapter: str | None = None, images: list | None = None) -> AsyncIterator[Delta]:
        """Stream deltas for one request until all its completions finish.

        Bad input (prompt too long, unknown adapter) raises InvalidRequest before anything
        runs. Leaving the iteration early (client gone) aborts the request.
        """
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already running")
        req = _Request(asyncio.get_running_loop(), asyncio.Queue())
        self._requests[request_id] = req
        try:
            if images:  # decoding and resizing a large image takes the CPU for seconds: off the event loop
                images = await asyncio.to_thread(self.engine.image_inputs, prompt_ids, images)
            self.engine.add_request(request_id, prompt_ids, params, adapter, images=images)
        except BaseException:  # a client that leaves while its images are prepared added nothing
            self._requests.pop(request_id, None)
            raise
        with self._wake:
            self._wake.notify()
        async for delta in self._drain(request_id, req, params.n):
            yield delta

    async def embed(self, prompts: list[list[int]], adapter: str | None = None) -> list[torch.Tensor]:
        """Pooled embeddings of token-id prompts, computed on the engine thread between steps.

        Bad input raises InvalidRequest at once; leaving early drops the rest of the work."""
        job = self.engine.embed_job(prompts, adapter)
        future = asyncio.get_running_loop().create_future()
        with self._wake:
            self._jobs.append((job, future))
            self._wake.notify()
        return await future

    def abort(self, request_id: Any) -> bool:
        """Stop a request now and free its KV blocks; its stream ends with finish_reason 'abort'."""
        seqs = self.engine.abort(request_id)
        for seq in seqs:
            self._publish(seq)
        return bool(seqs)

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load a PEFT adapter (or run dir) under `name`; requests may use it right after."""
        self.engine.add_adapter(name, path)
        self._paths[name] = str(path)

    def remove_adapter(self, name: str) -> None:
        """Unload adapter `name`; requests using it end with finish_reason 'abort'."""
        with self.engine.lock:  # no request may start with it between the check and the removal
            users = [s for s in self._unfinished() if s.adapter == name]
            self.engine.remove_adapter(name)
        self._paths.pop(name, None)
        for seq in users:
            self._publish(seq)

    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the path they were added from."""
        return dict(self._paths)

    def stats(self) -> dict[str, Any]:
        """running, waiting, kv_usage, preemptions, token totals, adapters."""
        return self.engine.stats()

    def shutdown(self, drain_s: float = 0.0) -> None:
        """Let running requests finish for up to `drain_s` seconds, abort the rest, stop the thread.

        Aborted streams end with finish_reason 'abort', so no caller waits forever.
        """
        deadline = time.monotonic() + drain_s
        while self.engine.has_unfinished() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        for request_id in {s.seq_id[0] for s in self._unfinished()}:
            self.abort(request_id)
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=10)

    # ---- the engine thread -------------------------------------------------------------------

    async def _drain(self, request_id, req: _Request, n: int) -> AsyncIterator[Delta]:
        finished = 0
        try:
            while finished < n:
                delta = await req.queue.get()
                finished += delta.finish_reason is not None
                yield delta
        finally:
            self._requests.pop(request_id, None)
            if finished < n:
                self.engine.abort(request_id)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self.engine.has_unfinished() and not self._jobs:
                    self._wake.wait()
                if self._stopped:
                    self._end_jobs(RuntimeError("the engine shut down"))
                    return
            self._run_jobs()
            if not self.engine.has_unfinished():
                continue
            try:
                touched = self.engine.step()
            except Exception as err:  # a failing step must not kill the server: fail what ran
                touched = self._fail_all(f"engine step failed: {err}")
            self._publish_step(touched)

    def _run_jobs(self) -> None:
        """One batch of each queued embedding job; a job no free blocks can serve waits for a step."""
        for job, future in list(self._jobs):
            if future.cancelled():  # its caller left
                self._jobs.remove((job, future))
                continue
            try:
                moved = job.advance(self.engine)
            except Exception as err:  # reported to that caller; the engine goes on
                self._finish_job(job, future, err)
                continue
            if job.done:
                self._finish_job(job, future, None)
            elif not moved and not self.engine.has_unfinished():  # nothing running will free blocks
                self._finish_job(job, future, RuntimeError("no free KV blocks to embed the prompt"))

    def _finish_job(self, job: EmbedJob, future: asyncio.Future, err: Exception | None) -> None:
        self._jobs.remove((job, future))
        future.get_loop().call_soon_threadsafe(_settle, future, job.vectors, err)

    def _end_jobs(self, err: Exception) -> None:
        while self._jobs:
            self._finish_job(*self._jobs[0], err)

    def _unfinished(self) -> list[Sequence]:
        with self.engine.lock:
            return [*self.engine.scheduler.running, *self.engine.scheduler.waiting]

    def _fail_all(self, error: str) -> list[Sequence]:
        with self.engine.lock:
            seqs = self._unfinished()
            for seq in seqs:
                self.engine.scheduler.abort(seq.seq_id)
                seq.error = error
        return seqs

    def _publish(self, seq: Sequence) -> None:
        with self._publishing:
            if (news := self._delta(seq)) is not None:
                news[0].loop.call_soon_threadsafe(news[0].queue.put_nowait, news[1])

    def _publish_step(self, seqs: list[Sequence]) -> None:
        """One step's deltas, handed to each event loop in one call: a wake-up per step, not per stream."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Delta]]] = {}
        with self._publishing:
            for seq in seqs:
                if (news := self._delta(seq)) is not None:
                    by_loop.setdefault(news[0].loop, []).append((news[0].queue, news[1]))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _delta(self, seq: Sequence) -> tuple[_Request, Delta] | None:
        """The request and its news since the last delta (None: nobody listens, or already ended)."""
        request_id, index = seq.seq_id
        req = self._requests.get(request_id)
        if req is None or index in req.done:  # e.g. abort() already sent the final delta
            return None
        if seq.is_finished:
            req.done.add(index)
        sent = req.sent.get(index, 0)
        req.sent[index] = len(seq.output_ids)
        logprobs = seq.logprobs[sent:] if seq.params.logprobs is not None else None
        delta = Delta(request_id, index, seq.take_delta(), seq.output_ids[sent:], logprobs,
                      seq.finish_reason if seq.is_finished else None, seq.error,
                      seq.num_prompt_tokens, len(seq.output_ids), seq.stop_reason if seq.is_finished else None)
        return req, delta


def _deliver(items: list[tuple[asyncio.Queue, Delta]]) -> None:
    for queue, delta in items:
        queue.put_nowait(delta)


def _settle(future: asyncio.Future, result: Any, err: Exception | None) -> None:
    """Resolve `future` on its loop, unless its caller already left."""
    if future.done():
        return
    if err is not None:
        future.set_exception(err)
    else:
        future.set_result(result)
