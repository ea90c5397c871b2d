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

from tunelab.data.errors import TemplateError

from tunelab.serve import anthropic_protocol as A
from tunelab.serve import protocol as P
from tunelab.serve.backends.base import Delta, Prompt
from tunelab.tools.parser import ToolCallDelta, ToolCallParser
from tunelab.serve.errors import anthropic_body, as_api_error, bad_request
from tunelab.serve.images import encode_chat
from tunelab.serve.models_manager import service_for
from tunelab.serve.openai_routes import check_constraint
from tunelab.serve.reasoning import ReasoningParser, opens_reasoning
from tunelab.serve.service import Service, Target
from tunelab.serve.tool_calls import ToolPlan, plan_tools
from tunelab.serve.tool_items import anthropic_choice, arguments_object, function_tools
from tunelab.serve.streaming import ReleasingStream, started, typed_sse, until_disconnected

router = APIRouter()


class CountTokensRequest(A.MessagesRequest):
    """POST /v1/messages/count_tokens: a Messages request without max_tokens."""

    max_tokens: int | None = None


@router.post("/v1/messages")
async def create_message(req: A.MessagesRequest, request: Request):
    """One assistant message; `stream: true` sends Anthropic's SSE events."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    plan = _plan(svc, target, req)
    prompt = await _prompt(svc, req, target, plan)
    max_tokens = svc.max_tokens_for(len(prompt.ids), req.max_tokens, "messages")
    params = check_constraint(svc, req.to_sampling_params(max_tokens, plan.constraint, svc.sampling_defaults(target)))
    svc.check_stop(params.stop, "stop_sequences")
    parser = ReasoningParser(opens_reasoning(prompt.text)) if svc.config.reasoning == "auto" else None
    ticket = svc.admit(1)
    mid = P.new_id("msg")
    builder = MessageBuilder(mid, target.name, len(prompt.ids), parser, params.stop, plan.parser())
    events = svc.stream(mid, prompt.ids, params, target, prompt.images)
    if req.stream:
        events = await started(events, ticket)
        return ReleasingStream(_sse(events, builder), ticket, "text/event-stream")
    return await until_disconnected(request, _whole(events, builder), ticket)


@router.post("/v1/messages/count_tokens")
async def count_tokens(req: CountTokensRequest, request: Request) -> dict[str, int]:
    """The prompt's token count, rendered exactly as /v1/messages renders it."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    return {"input_tokens": len((await _prompt(svc, req, target, _plan(svc, target, req))).ids)}


def _plan(svc: Service, target: Target, req: A.MessagesRequest) -> ToolPlan:
    """The tool plan of `tools`/`tool_choice`: rendered tools, the reply's parser, a forced call."""
    problem = req.unsupported()
    if problem:
        raise problem
    choice, parallel = anthropic_choice(req.tool_choice)
    return plan_tools(function_tools(req.tools, "input_schema"), choice, parallel,
                      svc.backend.chat_template(target.adapter), svc.backend.capabilities.structured_outputs,
                      svc.backend.name)


async def _prompt(svc: Service, req: A.MessagesRequest, target: Target, plan: ToolPlan) -> Prompt:
    """The rendered prompt, images checked and decoded by serve/images.py (the chat route's way)."""
    kwargs = {**req.template_kwargs(), **({"tools": plan.tools} if plan.tools else {})}
    messages, refs = req.chat_messages()
    try:
        return await encode_chat(svc, messages, kwargs, target.adapter, refs)
    except (ValueError, TypeError, KeyError, TemplateError) as err:
        raise bad_request(f"cannot apply the chat template: {err}", param="messages") from None


async def _whole(events: AsyncIterator[tuple[int, Delta]], builder: "MessageBuilder") -> dict[str, Any]:
    async for _, delta in events:
        builder.add(delta)
    builder.finish()
    return builder.message()


def _sse(events: AsyncIterator[tuple[int, Delta]], builder: "MessageBuilder") -> AsyncIterator[str]:
    """Anthropic's event stream; an error after the 200 header is an `error` event, as Anthropic does."""
    return typed_sse(events, builder, lambda err: (anthropic_body(as_api_error(err)), "error"))


class MessageBuilder:
    """One sequence's deltas -> Anthropic content blocks and stream events."""

    def __init__(self, mid: str, model: str, n_prompt: int, parser: ReasoningParser | None, stops: list[str],
                 tools: ToolCallParser | None = None):
        self.mid, self.model, self.n_prompt, self.parser, self.stops = mid, model, n_prompt, parser, stops
        self.tools = tools  # parses the answer for tool calls when the request has tools
        self.blocks: list[dict[str, Any]] = []  # finished and open blocks, in order
        self.arguments: dict[int, str] = {}  # block index -> a tool_use block's JSON text so far
        self.open: str | None = None  # "thinking" | "text" | "tool_use"
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
        text, calls = self._calls(text, last)
        events = self._append("thinking", thinking) if thinking else []
        events += self._append("text", text) if text else []
        for call in calls:
            events += self._call(call)
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the open block (a reply without calls has a text block, even empty), then the end."""
        events = self._close()
        if not any(b["type"] in ("text", "tool_use") for b in self.blocks):
            events += self._open("text") + self._close()
        reason, sequence = self._stop()
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return events + [{"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.tokens}},
                         {"type": "message_stop"}]

    def message(self) -> dict[str, Any]:
        """The whole message object (tool_use inputs as objects)."""
        content = [{**b, "input": arguments_object(self.arguments[i])} if b["type"] == "tool_use" else b
                   for i, b in enumerate(self.blocks)]
        return self._object(content, *self._stop())

    def _stop(self) -> tuple[str, str | None]:
        called = any(b["type"] == "tool_use" for b in self.blocks)
        return A.stop_reason(self.finish_reason, self.stop_string, self.stops, called)

    def _object(self, content: list[dict], reason: str | None, sequence: str | None) -> dict[str, Any]:
        return A.message_object(self.mid, self.model, content, reason, sequence, self.n_prompt, self.tokens)

    def _calls(self, text: str, last: bool) -> tuple[str, list[ToolCallDelta]]:
        """The answer's text with tool calls taken out, and the call deltas."""
        if self.tools is None:
            return text, []
        parsed = self.tools.step(text, last)
        return parsed.content, parsed.calls

    def _call(self, delta: ToolCallDelta) -> list[dict[str, Any]]:
        events = []
        if delta.name is not None:  # a new call: its block opens with id and name
            events = self._close() + self._open("tool_use", id=delta.id, name=delta.name)
            self.arguments[len(self.blocks) - 1] = ""
        if delta.arguments:
            index = len(self.blocks) - 1
            self.arguments[index] += delta.arguments
            piece = {"type": "input_json_delta", "partial_json": delta.arguments}
            events.append({"type": "content_block_delta", "index": index, "delta": piece})
        return events

    def _append(self, kind: str, piece: str) -> list[dict[str, Any]]:
        events = self._close() + self._open(kind) if self.open != kind else []
        self.blocks[-1][kind] += piece
        delta = {"type": f"{kind}_delta", kind: piece}
        return events + [{"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta}]

    def _open(self, kind: str, **call: Any) -> list[dict[str, Any]]:
        extra = {"thinking": {"thinking": "", "signature": ""}, "text": {"text": ""}}.get(kind, {"input": {}})
        block = {"type": kind, **call, **extra}
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
