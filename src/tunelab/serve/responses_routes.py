"""OpenAI's Responses API: `POST /v1/responses`, stateless, whole or streamed as typed events.

One `ResponseBuilder` turns a sequence's deltas into output items -- a `reasoning` item
for a `<think>` model's thinking (as a summary when `reasoning.summary` is asked, else as
reasoning_text content), then the assistant `message` -- and the events a streaming
client expects, in OpenAI's order:

    response.created, response.in_progress,
    [output_item.added(reasoning), reasoning_*.delta ..., output_item.done]
    output_item.added(message), content_part.added, output_text.delta ..., output_text.done,
    content_part.done, output_item.done, response.completed | response.incomplete

A whole (non-streamed) response is the final event's `response`, built the same way.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request

from tunelab.data.errors import TemplateError

from tunelab.serve import protocol as P
from tunelab.serve import responses_protocol as R
from tunelab.serve.backends.base import Delta
from tunelab.tools.parser import ToolCallDelta, ToolCallParser
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.images import encode_chat
from tunelab.serve.models_manager import service_for
from tunelab.serve.openai_routes import check_constraint
from tunelab.serve.reasoning import ReasoningParser, opens_reasoning
from tunelab.serve.service import Service, Target
from tunelab.serve.tool_calls import ToolPlan, plan_tools
from tunelab.serve.tool_items import function_tools, responses_choice
from tunelab.serve.streaming import ReleasingStream, error_payload, started, typed_sse, until_disconnected

router = APIRouter()


@router.post("/v1/responses")
async def create_response(req: R.ResponsesRequest, request: Request):
    """Generate one response; `stream: true` sends the typed SSE events."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    plan, structured = _tools(svc, target, req)
    kwargs = {**req.template_kwargs(), **({"tools": plan.tools} if plan.tools else {})}
    messages, refs = req.messages()
    try:
        prompt = await encode_chat(svc, messages, kwargs, target.adapter, refs)
    except (ValueError, TypeError, KeyError, TemplateError) as err:
        raise bad_request(f"cannot apply the chat template: {err}", param="input") from None
    defaults = svc.sampling_defaults(target)
    max_tokens = _max_tokens(svc, len(prompt.ids), req.max_output_tokens or defaults.get("max_tokens"))
    params = check_constraint(svc, req.to_sampling_params(max_tokens, structured, defaults))
    thinking = svc.config.reasoning == "auto"
    parser = ReasoningParser(opens_reasoning(prompt.text)) if thinking else None
    ticket = svc.admit(1)
    rid = P.new_id("resp")
    builder = ResponseBuilder(rid, req, target.name, len(prompt.ids), parser, plan.parser())
    events = svc.stream(rid, prompt.ids, params, target, prompt.images)
    if req.stream:
        events = await started(events, ticket)
        return ReleasingStream(_sse(events, builder), ticket, "text/event-stream")
    return await until_disconnected(request, _whole(events, builder), ticket)


def _tools(svc: Service, target: Target, req: R.ResponsesRequest) -> tuple[ToolPlan, Any]:
    """The tool plan (tools, tool_choice, parallel_tool_calls) and the output constraint."""
    caps = svc.backend.capabilities
    plan = plan_tools(function_tools(req.tools, "parameters"), responses_choice(req.tool_choice),
                      req.parallel_tool_calls, svc.backend.chat_template(target.adapter),
                      caps.structured_outputs, svc.backend.name)
    if req.max_tool_calls is not None:
        plan.max_calls = min(plan.max_calls or req.max_tool_calls, req.max_tool_calls)
    fmt = req.text_constraint()
    if fmt is not None and plan.constraint is not None:
        raise bad_request("text.format cannot be combined with a forced tool_choice", param="text.format")
    return plan, plan.constraint or fmt


def _max_tokens(svc: Service, prompt_len: int, requested: int | None) -> int:
    """The context check, with its errors naming this API's field."""
    try:
        return svc.max_tokens_for(prompt_len, requested, "input")
    except APIError as err:
        if err.param == "max_tokens":
            err.param = "max_output_tokens"
            err.message = err.message.replace("max_tokens", "max_output_tokens")
        raise


async def _whole(events: AsyncIterator[tuple[int, Delta]], builder: "ResponseBuilder") -> dict[str, Any]:
    builder.start()
    async for _, delta in events:
        builder.add(delta)
    return builder.finish()[-1]["response"]


def _sse(events: AsyncIterator[tuple[int, Delta]], builder: "ResponseBuilder") -> AsyncIterator[str]:
    """The Responses API's typed events; an error after the 200 header is an `error` event, as OpenAI does."""
    return typed_sse(events, builder, lambda err: (_error_event(builder, err), "error"))


def _error_event(builder: "ResponseBuilder", err: Exception) -> dict[str, Any]:
    body = error_payload(err)["error"]
    return builder.event("error", code=body["code"] or body["type"], message=body["message"], param=body["param"])


class ResponseBuilder:
    """One sequence's deltas -> Responses output items and the typed stream events."""

    def __init__(self, rid: str, req: R.ResponsesRequest, model: str, n_prompt: int,
                 parser: ReasoningParser | None, tools: ToolCallParser | None = None):
        self.rid, self.req, self.model, self.n_prompt, self.parser = rid, req, model, n_prompt, parser
        self.tools = tools  # parses the answer for function calls when the request has tools
        self.created = time.time()
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: str | None = None  # the item being streamed: "reasoning" | "message" | "call"
        self.reasoning, self.text = "", ""
        self.call: dict[str, str] = {}  # the open function call: id, call_id, name, arguments
        self.tokens, self.reasoning_tokens, self.reason = 0, 0, None
        self.summary = req.summary_wanted()
        self.ids = {"reasoning": P.new_id("rs"), "message": P.new_id("msg")}

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next event of the stream (sequence numbers count from 0)."""
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq - 1, **fields}

    def start(self) -> list[dict[str, Any]]:
        """response.created and response.in_progress."""
        snapshot = self.snapshot("in_progress")
        return [self.event("response.created", response=snapshot),
                self.event("response.in_progress", response=snapshot)]

    def add(self, delta: Delta) -> list[dict[str, Any]]:
        """The events one delta makes final."""
        self.tokens += len(delta.token_ids)
        self.reason = delta.finish_reason or self.reason
        last = bool(delta.finish_reason)
        reasoning, content = self.parser.step(delta.text, last) if self.parser else ("", delta.text)
        if reasoning and not content:
            self.reasoning_tokens += len(delta.token_ids)
        content, calls = self._calls(content, last)
        events = self._think(reasoning) if reasoning else []
        events += self._say(content) if content else []
        for call in calls:
            events += self._call(call)
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the open item (an answer without calls is a message, even empty), then the final event."""
        events = self._close_open()
        if not any(item["type"] in ("message", "function_call") for item in self.output):
            events += self._open_message() + self._close_message()
        status, why = self.status()
        return events + [self.event(f"response.{status}", response=self.snapshot(status, why))]

    def status(self) -> tuple[str, str | None]:
        """completed, or incomplete with its reason (the token limit, or an aborted request)."""
        if self.reason == "length":
            return "incomplete", "max_output_tokens"
        return ("incomplete", None) if self.reason == "abort" else ("completed", None)

    def snapshot(self, status: str, why: str | None = None) -> dict[str, Any]:
        """The response object as it stands."""
        done = status != "in_progress"
        use = R.usage(self.n_prompt, self.tokens, self.reasoning_tokens) if done else None
        return R.response_object(self.rid, self.req, self.model, self.created, status, list(self.output),
                                 use, why)

    def _calls(self, content: str, last: bool) -> tuple[str, list[ToolCallDelta]]:
        """The answer's text with function calls taken out, and the call deltas."""
        if self.tools is None:
            return content, []
        parsed = self.tools.step(content, last)
        return parsed.content, parsed.calls

    def _close_open(self) -> list[dict[str, Any]]:
        closers = {"reasoning": self._close_reasoning, "message": self._close_message,
                   "call": self._close_call}
        return closers[self.open]() if self.open else []

    # ---- reasoning item ----------------------------------------------------------------------

    def _think(self, text: str) -> list[dict[str, Any]]:
        events = self._open_reasoning() if self.open is None else []
        self.reasoning += text
        where = self._where("reasoning")
        if self.summary:
            return events + [self.event("response.reasoning_summary_text.delta", summary_index=0, delta=text,
                                        **where)]
        return events + [self.event("response.reasoning_text.delta", content_index=0, delta=text, **where)]

    def _open_reasoning(self) -> list[dict[str, Any]]:
        self.open = "reasoning"
        item = R.reasoning_item(self.ids["reasoning"], "", self.summary, "in_progress")
        added = self.event("response.output_item.added", output_index=len(self.output), item=item)
        if self.summary:
            part = {"type": "summary_text", "text": ""}
            return [added, self.event("response.reasoning_summary_part.added", summary_index=0, part=part,
                                      **self._where("reasoning"))]
        part = {"type": "reasoning_text", "text": ""}
        return [added, self.event("response.content_part.added", content_index=0, part=part,
                                  **self._where("reasoning"))]

    def _close_reasoning(self) -> list[dict[str, Any]]:
        where, text = self._where("reasoning"), self.reasoning
        if self.summary:
            part = {"type": "summary_text", "text": text}
            events = [self.event("response.reasoning_summary_text.done", summary_index=0, text=text, **where),
                      self.event("response.reasoning_summary_part.done", summary_index=0, part=part, **where)]
        else:
            part = {"type": "reasoning_text", "text": text}
            events = [self.event("response.reasoning_text.done", content_index=0, text=text, **where),
                      self.event("response.content_part.done", content_index=0, part=part, **where)]
        item = R.reasoning_item(self.ids["reasoning"], text, self.summary, "completed")
        return events + [self._item_done(item)]

    # ---- message item ------------------------------------------------------------------------

    def _say(self, text: str) -> list[dict[str, Any]]:
        events = self._close_open() if self.open != "message" else []
        if self.open != "message":
            events += self._open_message()
        self.text += text
        return events + [self.event("response.output_text.delta", content_index=0, delta=text, logprobs=[],
                                    **self._where("message"))]

    def _open_message(self) -> list[dict[str, Any]]:
        self.open = "message"
        item = R.message_item(self.ids["message"], "", "in_progress")
        return [self.event("response.output_item.added", output_index=len(self.output), item=item),
                self.event("response.content_part.added", content_index=0, part=R.output_text(""),
                           **self._where("message"))]

    def _close_message(self) -> list[dict[str, Any]]:
        where, text = self._where("message"), self.text
        status = "incomplete" if self.status()[0] == "incomplete" else "completed"
        return [self.event("response.output_text.done", content_index=0, text=text, logprobs=[], **where),
                self.event("response.content_part.done", content_index=0, part=R.output_text(text), **where),
                self._item_done(R.message_item(self.ids["message"], text, status))]

    # ---- function call items ------------------------------------------------------------------

    def _call(self, delta: ToolCallDelta) -> list[dict[str, Any]]:
        events = []
        if delta.name is not None:  # a new call: id and name come first
            events = self._close_open()
            self.open = "call"
            self.call = {"id": P.new_id("fc"), "call_id": delta.id or "", "name": delta.name, "arguments": ""}
            item = R.function_call_item(self.call["id"], self.call["call_id"], delta.name, "", "in_progress")
            events.append(self.event("response.output_item.added", output_index=len(self.output), item=item))
        if delta.arguments:
            self.call["arguments"] += delta.arguments
            events.append(self.event("response.function_call_arguments.delta", delta=delta.arguments,
                                     **self._where("call")))
        return events

    def _close_call(self) -> list[dict[str, Any]]:
        c = self.call
        done = self.event("response.function_call_arguments.done", name=c["name"], arguments=c["arguments"],
                          **self._where("call"))
        item = R.function_call_item(c["id"], c["call_id"], c["name"], c["arguments"], "completed")
        return [done, self._item_done(item)]

    def _item_done(self, item: dict[str, Any]) -> dict[str, Any]:
        self.open = None
        event = self.event("response.output_item.done", output_index=len(self.output), item=item)
        self.output.append(item)
        return event

    def _where(self, kind: str) -> dict[str, Any]:
        """item_id and output_index of the open item of `kind` (it is the next output slot)."""
        item_id = self.call["id"] if kind == "call" else self.ids[kind]
        return {"item_id": item_id, "output_index": len(self.output)}
