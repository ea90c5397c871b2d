"""Anthropic's Messages API: `POST /v1/messages` (whole or streamed) and `/v1/messages/count_tokens`.

Auth takes `x-api-key` as well as a Bearer token (serve/auth.py); errors leave in
Anthropic's shape (`serve/errors.respond`). A `<think>` model's thinking comes back as a
`thinking` block before the `text` block. A stream follows Anthropic's event order:

    message_start, content_block_start, ping, content_block_delta ..., content_block_stop,
    [content_block_start, content_block_delta ..., content_block_stop], message_delta, message_stop
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import APIRouter, Request

from tunelab.serve import anthropic_protocol as A
from tunelab.serve import protocol as P
from tunelab.serve.backends.base import Delta, Prompt
from tunelab.serve.errors import anthropic_body, as_api_error, bad_request
from tunelab.serve.openai_routes import service_of
from tunelab.serve.reasoning import ReasoningParser, opens_reasoning
from tunelab.serve.service import Service, Target
from tunelab.serve.streaming import ReleasingStream, sse_event, started, until_disconnected

router = APIRouter()


class CountTokensRequest(A.MessagesRequest):
    """POST /v1/messages/count_tokens: a Messages request without max_tokens."""

    max_tokens: int | None = None


@router.post("/v1/messages")
async def create_message(req: A.MessagesRequest, request: Request):
    """One assistant message; `stream: true` sends Anthropic's SSE events."""
    svc = service_of(request)
    target = svc.resolve(req.model)
    prompt = _prompt(svc, req, target)
    params = req.to_sampling_params(svc.max_tokens_for(len(prompt.ids), req.max_tokens, "messages"))
    svc.check_stop(params.stop, "stop_sequences")
    parser = ReasoningParser(opens_reasoning(prompt.text)) if svc.config.reasoning == "auto" else None
    ticket = svc.admit(1)
    mid = P.new_id("msg")
    builder = MessageBuilder(mid, target.name, len(prompt.ids), parser, params.stop)
    events = svc.stream(mid, prompt.ids, params, target)
    if req.stream:
        events = await started(events, ticket)
        return ReleasingStream(_sse(events, builder), ticket, "text/event-stream")
    return await until_disconnected(request, _whole(events, builder), ticket)


@router.post("/v1/messages/count_tokens")
async def count_tokens(req: CountTokensRequest, request: Request) -> dict[str, int]:
    """The prompt's token count, rendered exactly as /v1/messages renders it."""
    svc = service_of(request)
    return {"input_tokens": len(_prompt(svc, req, svc.resolve(req.model)).ids)}


def _prompt(svc: Service, req: A.MessagesRequest, target: Target) -> Prompt:
    problem = req.unsupported()
    if problem:
        raise problem
    try:
        return svc.backend.encode_chat(req.chat_messages(), req.template_kwargs(), target.adapter)
    except (ValueError, TypeError, KeyError) as err:
        raise bad_request(f"cannot apply the chat template: {err}", param="messages") from None


async def _whole(events: AsyncIterator[tuple[int, Delta]], builder: "MessageBuilder") -> dict[str, Any]:
    async for _, delta in events:
        builder.add(delta)
    builder.finish()
    return builder.message()


async def _sse(events: AsyncIterator[tuple[int, Delta]], builder: "MessageBuilder") -> AsyncIterator[str]:
    for event in builder.start():
        yield sse_event(event, event["type"])
    try:
        async for _, delta in events:
            for event in builder.add(delta):
                yield sse_event(event, event["type"])
        for event in builder.finish():
            yield sse_event(event, event["type"])
    except Exception as err:  # the 200 header is already sent: an `error` event, as Anthropic does
        yield sse_event(anthropic_body(as_api_error(err)), "error")


class MessageBuilder:
    """One sequence's deltas -> Anthropic content blocks and stream events."""

    def __init__(self, mid: str, model: str, n_prompt: int, parser: ReasoningParser | None, stops: list[str]):
        self.mid, self.model, self.n_prompt, self.parser, self.stops = mid, model, n_prompt, parser, stops
        self.blocks: list[dict[str, Any]] = []  # finished and open blocks, in order
        self.open: str | None = None  # "thinking" | "text"
        self.tokens = 0
        self.finish_reason: str | None = None
        self.stop_string: str | None = None

    def start(self) -> list[dict[str, Any]]:
        """message_start, with the prompt's token count."""
        return [{"type": "message_start", "message": self._object([], None, None)}]

    def add(self, delta: Delta) -> list[dict[str, Any]]:
        """The events one delta makes final."""
        self.tokens += len(delta.token_ids)
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.stop_string = delta.stop_string or self.stop_string
        last = bool(delta.finish_reason)
        thinking, text = self.parser.step(delta.text, last) if self.parser else ("", delta.text)
        events = self._append("thinking", thinking) if thinking else []
        return events + (self._append("text", text) if text else [])

    def finish(self) -> list[dict[str, Any]]:
        """Close the open block (an empty reply still has a text block), then message_delta/stop."""
        events = self._close()
        if not any(b["type"] == "text" for b in self.blocks):
            events += self._open("text") + self._close()
        reason, sequence = self._stop()
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return events + [{"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.tokens}},
                         {"type": "message_stop"}]

    def message(self) -> dict[str, Any]:
        """The whole message object."""
        return self._object(self.blocks, *self._stop())

    def _stop(self) -> tuple[str, str | None]:
        return A.stop_reason(self.finish_reason, self.stop_string, self.stops)

    def _object(self, content: list[dict], reason: str | None, sequence: str | None) -> dict[str, Any]:
        return A.message_object(self.mid, self.model, content, reason, sequence, self.n_prompt, self.tokens)

    def _append(self, kind: str, piece: str) -> list[dict[str, Any]]:
        events = self._close() + self._open(kind) if self.open != kind else []
        self.blocks[-1][kind] += piece
        delta = {"type": f"{kind}_delta", kind: piece}
        return events + [{"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta}]

    def _open(self, kind: str) -> list[dict[str, Any]]:
        block = {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
        self.blocks.append(block)
        self.open = kind
        index = len(self.blocks) - 1
        events = [{"type": "content_block_start", "index": index, "content_block": dict(block)}]
        return events + ([{"type": "ping"}] if len(self.blocks) == 1 else [])

    def _close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": len(self.blocks) - 1}]
