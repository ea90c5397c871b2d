"""Response plumbing: SSE and NDJSON streams that always release their queue slot,
and non-streaming generation that stops when the client goes away."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
from starlette.responses import StreamingResponse

from tunelab.serve.errors import APIError, as_api_error, shutting_down
from tunelab.serve.service import Ticket


class ReleasingStream(StreamingResponse):
    """A StreamingResponse that closes its iterator and releases its ticket however it ends.

    Starlette cancels the body task on disconnect, possibly before the iterator has
    started; closing it here is what guarantees the backend sequence is aborted.
    """

    def __init__(self, content: AsyncIterator[str], ticket: Ticket, media_type: str):
        super().__init__(content, media_type=media_type,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._ticket, self._content = ticket, content

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._content.aclose()
            self._ticket.release()


def sse_event(payload: dict[str, Any] | str, event: str | None = None) -> str:
    """One `data:` event, named by an `event:` line when given (Responses and Anthropic streams)."""
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


async def typed_sse(events: AsyncIterator[tuple[int, Any]], builder: Any,
                    error_event: Callable[[Exception], tuple[dict[str, Any], str]]) -> AsyncIterator[str]:
    """Stream an API's typed events: `builder.start()`, `.add(delta)` and `.finish()` each give a
    list of events named by their "type". An error after the 200 header is sent becomes the
    API's own `error` event (`error_event(err)` -> (payload, name))."""
    for event in builder.start():
        yield sse_event(event, event["type"])
    try:
        async for _, delta in events:
            for event in builder.add(delta):
                yield sse_event(event, event["type"])
        for event in builder.finish():
            yield sse_event(event, event["type"])
    except Exception as err:
        yield sse_event(*error_event(err))


def ndjson_line(payload: dict[str, Any]) -> str:
    """One NDJSON line."""
    return json.dumps(payload, separators=(",", ":")) + "\n"


def error_payload(err: Exception) -> dict[str, Any]:
    """An error body for a failure after the stream started (status is already 200)."""
    return as_api_error(err).body()


async def started(events: AsyncIterator[Any], ticket: Ticket) -> AsyncIterator[Any]:
    """Run `events` up to its first item now, so a rejected request is an HTTP error (400)
    before any stream header is sent; the returned iterator replays that item."""
    try:
        first = [await events.__anext__()]
    except StopAsyncIteration:
        first = []
    except BaseException:
        ticket.release()
        raise

    async def replay() -> AsyncIterator[Any]:
        try:
            for item in first:
                yield item
            async for item in events:
                yield item
        finally:
            await events.aclose()

    return replay()


async def until_disconnected(request: Request, work: Awaitable[Any], ticket: Ticket,
                             poll_s: float = 0.2) -> Any:
    """Await `work`, cancelling it (and so aborting generation) if the client disconnects
    or the shutdown deadline passes (then a 503)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if ticket.service.stopping:  # checked first: the deadline's aborts also end `work`
                raise shutting_down()
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise APIError(499, "client disconnected", type="client_closed")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ticket.release()
