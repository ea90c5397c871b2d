"""Ollama API subset: /api/chat, /api/generate (NDJSON streams), /api/version (the model routes,
/api/tags, /api/show, /api/ps, /api/copy, /api/delete, are in `ollama_models`).

Enough for Ollama clients and UIs to work unchanged against tunelab.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request

from tunelab.data.errors import TemplateError
from tunelab.serve import protocol as P
from tunelab.engine.config import SamplingParams
from tunelab.serve.backends.base import Prompt
from tunelab.serve.errors import bad_request
from tunelab.serve.images import encode_chat, ollama_refs, with_ollama_markers
from tunelab.serve.keep_alive import parse_keep_alive
from tunelab.serve.models_manager import load_duration_ns, service_for
from tunelab.serve.openai_routes import chat_messages
from tunelab.serve.reasoning import ReasoningParser, opens_reasoning
from tunelab.serve.service import Service, Target
from tunelab.serve.tool_calls import ToolPlan, ollama_calls, plan_tools, tool_step
from tunelab.serve.tools_protocol import ollama_format
from tunelab.serve.streaming import ReleasingStream, error_payload, ndjson_line, started, until_disconnected

router = APIRouter()
OLLAMA_VERSION = "0.6.0"  # the API level we mirror; some clients check it


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def ollama_params(svc: Service, target: Target, opts: P.OllamaOptions | None, prompt_len: int,
                  structured: Any = None) -> SamplingParams:
    """Ollama `options` over the model's defaults -> SamplingParams; num_predict -1 (or none) means
    up to the model's num_predict, else the server's default."""
    o, defaults = opts or P.OllamaOptions(), svc.sampling_defaults(target)
    wanted = o.num_predict if o.num_predict and o.num_predict > 0 else defaults.get("max_tokens")
    return o.to_sampling_params(svc.max_tokens_for(prompt_len, wanted, "options.num_predict"), structured,
                                defaults)


def _format(svc: Service, value: Any) -> Any:
    """Ollama's `format` as the engine's constraint; a 400 where the backend cannot enforce it."""
    structured = ollama_format(value)
    if structured is not None and not svc.backend.capabilities.structured_outputs:
        raise bad_request(f"the {svc.backend.name} backend does not do constrained decoding", param="format")
    return structured


@router.post("/api/chat")
async def chat(req: P.OllamaChatRequest, request: Request):
    """Ollama chat; streams NDJSON unless stream is false."""
    if not req.messages:  # Ollama's "load the model" probe (keep_alive 0: unload): done at once
        return await _probe(request, req.model, req.keep_alive, "chat")
    svc = await service_for(request, req.model, req.keep_alive)
    target = svc.resolve(req.model)
    messages = [P.ChatMessage(role=m.role, content=with_ollama_markers(m.content, m.images), tool_calls=m.tool_calls,
                              name=m.tool_name, reasoning_content=m.thinking) for m in req.messages]
    tools = [t.as_dict() for t in req.tools or []]
    plan = plan_tools(tools, None, None, svc.backend.chat_template(target.adapter), False, svc.backend.name)
    kwargs = ({} if req.think is None else {"enable_thinking": req.think}) | ({"tools": tools} if tools else {})
    try:
        prompt = await encode_chat(svc, chat_messages(messages), kwargs, target.adapter, ollama_refs(req.messages))
    except TemplateError as err:
        raise bad_request(f"cannot apply the chat template: {err}", param="messages") from None
    return await _respond(request, svc, target, prompt, req.options, req.stream, "chat",
                          opens_reasoning(prompt.text), _format(svc, req.format), plan)


@router.post("/api/generate")
async def generate(req: P.OllamaGenerateRequest, request: Request):
    """Ollama generate: raw text, or the prompt wrapped in the chat template."""
    if not req.prompt and not req.system:  # Ollama's "load the model" probe
        return await _probe(request, req.model, req.keep_alive, "generate")
    svc = await service_for(request, req.model, req.keep_alive)
    target = svc.resolve(req.model)
    refs = [(f"data:image;base64,{b64}", f"images.{j}") for j, b64 in enumerate(req.images or ())]
    if req.raw and refs:
        raise bad_request("images need the chat template; send them without raw", param="images")
    if req.raw:
        prompt = svc.backend.encode_text(req.prompt)
    else:
        turns = ([{"role": "system", "content": req.system}] if req.system else [])
        kwargs = {} if req.think is None else {"enable_thinking": req.think}
        user = {"role": "user", "content": with_ollama_markers(req.prompt, req.images)}
        prompt = await encode_chat(svc, turns + [user], kwargs, target.adapter, refs)
    return await _respond(request, svc, target, prompt, req.options, req.stream, "generate",
                          opens_reasoning(prompt.text), _format(svc, req.format))


async def _probe(request: Request, model: str, keep_alive: float | str | None, kind: str) -> dict[str, Any]:
    """An empty request loads the model; with keep_alive 0 it unloads it (the one model of a server
    without --models stays loaded: done_reason 'load')."""
    svc: Service = request.app.state.service
    if getattr(svc, "models", None) is not None and keep_alive is not None \
            and parse_keep_alive(keep_alive, "keep_alive") == 0:
        name = await svc.models.unload_name(model)
        return {**_piece(Target(name, None), kind, "", "", done=True), "done_reason": "unload"}
    target = (await service_for(request, model, keep_alive)).resolve(model)
    return {**_piece(target, kind, "", "", done=True), "done_reason": "load"}


async def _respond(request: Request, svc: Service, target: Target, prompt: Prompt,
                   options: P.OllamaOptions | None, stream: bool, kind: str, opened: bool,
                   structured: Any = None, plan: ToolPlan | None = None):
    ids = prompt.ids
    params = ollama_params(svc, target, options, len(ids), structured)
    svc.check_stop(params.stop, "options.stop")
    ticket = svc.admit(1)
    events = svc.stream(P.new_id("ollama"), ids, params, target, prompt.images)
    if stream:  # errors before the first token are an HTTP error, as with Ollama
        lines = _lines(svc, target, ids, await started(events, ticket), kind, opened, plan,
                       load_duration_ns(request))
        return ReleasingStream(_ndjson(lines), ticket, "application/x-ndjson")
    lines = _lines(svc, target, ids, events, kind, opened, plan, load_duration_ns(request))
    return await until_disconnected(request, _merged(lines, kind), ticket)


async def _lines(svc: Service, target: Target, ids: list[int], events: AsyncIterator, kind: str,
                 opened: bool, plan: ToolPlan | None, load_ns: int = 0) -> AsyncIterator[dict[str, Any]]:
    start, tokens, reason = time.perf_counter_ns(), 0, "stop"
    parser = ReasoningParser(opened) if svc.config.reasoning == "auto" else None
    tools, sent = (plan.parser() if plan else None), 0
    async for _, d in events:
        tokens += len(d.token_ids)
        thinking, content = parser.step(d.text, bool(d.finish_reason)) if parser else ("", d.text)
        content, _ = tool_step(tools, content, bool(d.finish_reason))
        reason = d.finish_reason or reason
        if thinking or content:
            yield _piece(target, kind, content, thinking, done=False)
        done = [c for c in tools.calls if c.complete or d.finish_reason] if tools else []
        if len(done) > sent:  # Ollama sends each call whole, once it is complete
            yield {**_piece(target, kind, "", "", done=False), "message": {
                "role": "assistant", "content": "", "tool_calls": ollama_calls(done[sent:])}}
            sent = len(done)
    final = _piece(target, kind, "", "", done=True)
    elapsed = time.perf_counter_ns() - start
    final.update(done_reason=reason, total_duration=elapsed + load_ns, load_duration=load_ns,
                 prompt_eval_count=len(ids), eval_count=tokens, eval_duration=elapsed)
    yield final


def _piece(target: Target, kind: str, content: str, thinking: str, done: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": target.name, "created_at": _now()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": content}
        if thinking:
            out["message"]["thinking"] = thinking
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    out["done"] = done
    return out


async def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Dict lines as NDJSON text; closing this closes (and so aborts) the generation."""
    try:
        async for line in lines:
            yield ndjson_line(line)
    except Exception as err:  # headers already sent: report in-band, as Ollama does
        yield ndjson_line({"error": error_payload(err)["error"]["message"]})
    finally:
        await lines.aclose()


async def _merged(lines: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Non-streaming: one object with all text joined and the final counters."""
    text, thinking, last, calls = "", "", {}, []
    async for line in lines:
        part = line.get("message", line)
        text += part.get("content", line.get("response", "")) or ""
        thinking += part.get("thinking", "") or ""
        calls += part.get("tool_calls", [])
        last = line
    key = "message" if kind == "chat" else "response"
    if kind == "chat":
        last[key] = {"role": "assistant", "content": text, **({"thinking": thinking} if thinking else {}),
                     **({"tool_calls": calls} if calls else {})}
    else:
        last[key] = text
        if thinking:
            last["thinking"] = thinking
    return last


@router.get("/api/version")
async def version() -> dict[str, str]:
    """The Ollama API version mirrored."""
    return {"version": OLLAMA_VERSION}
