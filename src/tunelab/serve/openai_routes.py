"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/adapters, and
vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from tunelab.data.errors import TemplateError
from tunelab.errors import TunelabError
from tunelab.rundir import Run
from tunelab.serve import protocol as P
from tunelab.engine.sequence import TokenLogprob
from tunelab.serve.backends.base import Delta
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.images import encode_chat, openai_refs, part_text
from tunelab.serve.models_manager import service_for
from tunelab.serve.reasoning import ReasoningParser, opens_reasoning, split_reasoning
from tunelab.serve.service import Service, Target
from tunelab.serve.tool_calls import ToolPlan, finish_reason, plan_tools, tool_step
from tunelab.tools.parser import parse_tool_calls
from tunelab.serve.streaming import ReleasingStream, error_payload, sse_event, started, until_disconnected

router = APIRouter()


def service_of(request: Request) -> Service:
    """The Service attached to the app."""
    return request.app.state.service


# ---- models and adapters ----------------------------------------------------------------------


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The base model, every adapter (adapters carry `parent`), and other names (Ollama's copy)."""
    svc = service_of(request)
    svc.require_ready()
    if getattr(svc, "models", None) is not None:  # --models: everything servable, loaded or not
        return {"object": "list", "data": svc.models.openai_list()}
    b = svc.backend
    base = {"id": b.model_id, "object": "model", "created": b.created, "owned_by": "tunelab",
            "root": b.model_path, "parent": None, "max_model_len": svc.context_length()}
    adapters = [{"id": name, "object": "model", "created": b.created, "owned_by": "tunelab",
                 "root": path, "parent": b.model_id} for name, path in b.adapters().items()]
    roots = {b.model_id: base, **{a["id"]: a for a in adapters}}
    aliases = [{**roots[target], "id": name} for name, target in svc.aliases.items() if target in roots]
    return {"object": "list", "data": [base, *adapters, *aliases]}


@router.post("/v1/adapters")
async def load_adapter(body: P.AdapterLoadRequest, request: Request) -> dict[str, Any]:
    """Hot-load a PEFT adapter directory under a name."""
    svc = service_of(request)
    path = await add_adapter(svc, body.name, body.path)
    return {"id": body.name, "object": "model", "parent": svc.backend.model_id, "root": str(path)}


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def vllm_load_lora(body: P.LoraLoadRequest, request: Request) -> str:
    """vLLM's hot-load route: `{lora_name, lora_path}`, answered in vLLM's words."""
    await add_adapter(service_of(request), body.lora_name, body.lora_path)
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def vllm_unload_lora(body: P.LoraUnloadRequest, request: Request) -> str:
    """vLLM's unload route: `{lora_name}`."""
    await remove_adapter(service_of(request), body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


async def add_adapter(svc: Service, name: str, text: str) -> Path:
    """Load the adapter at `text` (a folder or a run) under `name`; 409 if the name is taken."""
    svc.require_ready()
    if not svc.backend.capabilities.adapters:
        raise bad_request(f"the {svc.backend.name} backend does not serve adapters", param="name")
    if name == svc.backend.model_id or name in svc.backend.adapters():
        raise APIError(409, f"a model named '{name}' is already served", param="name",
                       code="already_exists")
    path = adapter_dir(text)
    try:
        await asyncio.to_thread(svc.backend.add_adapter, name, str(path))
    except (TunelabError, ValueError, OSError) as err:
        raise bad_request(f"cannot load adapter: {err}", param="path") from None
    return path


def adapter_dir(text: str) -> Path:
    """A PEFT adapter folder, or a training run holding one (runs/NAME), as `--adapter` takes."""
    shown = text if len(text) <= 200 else text[:200] + "..."
    try:
        path = Path(text).expanduser()
        found = Run(path).adapter_dir or path
        if (found / "adapter_config.json").is_file():
            return found
    except OSError as err:  # e.g. a name longer than the filesystem allows
        raise bad_request(f"{shown}: {err.strerror}", param="path") from None
    raise bad_request(f"{shown}: not a PEFT adapter folder or a run with one (no adapter_config.json)",
                      param="path")


@router.delete("/v1/adapters/{name:path}")
async def unload_adapter(name: str, request: Request) -> dict[str, Any]:
    """Unload an adapter; requests already running on it finish first (backend's duty)."""
    await remove_adapter(service_of(request), name)
    return {"id": name, "object": "model", "deleted": True}


async def remove_adapter(svc: Service, name: str) -> None:
    """Unload adapter `name`; 404 when no adapter has that name."""
    svc.require_ready()
    if name not in svc.backend.adapters():
        raise APIError(404, f"no adapter named '{name}' is loaded", param="name",
                       code="model_not_found")
    await asyncio.to_thread(svc.backend.remove_adapter, name)


# ---- chat ---------------------------------------------------------------------------------------


def chat_messages(messages: list[P.ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages -> the dicts the chat template takes ({role, content}, plus name and
    reasoning_content when given, tool_calls on assistant turns, tool_call_id on tool results)."""
    out = []
    for i, m in enumerate(messages):
        content = m.content if isinstance(m.content, str) or m.content is None else _text(m.content, i)
        turn: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        for key in ("name", "reasoning_content"):  # the template renders them or not, as in vLLM
            if getattr(m, key):
                turn[key] = getattr(m, key)
        if m.tool_calls:
            turn["tool_calls"] = [c.as_dict(j) for j, c in enumerate(m.tool_calls)]
        if m.role == "tool":
            turn.update(tool_call_id=m.tool_call_id, name=m.name)
        out.append(turn)
    return out


def _text(parts: list[P.ContentPart], i: int) -> str:
    return "".join(part_text(p) for p in parts)  # an image part leaves its marker (serve/images.py)


@router.post("/v1/chat/completions")
async def chat_completions(req: P.ChatCompletionRequest, request: Request):
    """Chat completion, streamed as SSE or returned whole."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    svc.check_n(req.n)
    svc.check_logprobs(req.logprobs)
    plan, structured = chat_tools(svc, target, req)
    kwargs = {**(req.chat_template_kwargs or {}), **({"tools": plan.tools} if plan.tools else {})}
    try:
        prompt = await encode_chat(svc, chat_messages(req.messages), kwargs, target.adapter,
                                   openai_refs(req.messages))
    except (ValueError, TypeError, KeyError, TemplateError) as err:
        raise bad_request(f"cannot apply the chat template: {err}", param="messages") from None
    defaults = svc.sampling_defaults(target)
    max_tokens = svc.max_tokens_for(len(prompt.ids), req.max_completion_tokens or req.max_tokens
                                    or defaults.get("max_tokens"), "messages")
    params = check_constraint(svc, req.to_sampling_params(max_tokens, structured, defaults))
    svc.check_stop(params.stop, "stop")
    thinking = svc.config.reasoning == "auto"
    opened = thinking and opens_reasoning(prompt.text)
    ticket = svc.admit(req.n)
    rid = P.new_id("chatcmpl")
    events = svc.stream(rid, prompt.ids, params, target, prompt.images)
    if req.stream:
        events = await started(events, ticket)
        chunks = _chat_sse(events, rid, target, req, len(prompt.ids), thinking, opened, plan)
        return ReleasingStream(chunks, ticket, "text/event-stream")
    work = _chat_collect(events, rid, target, len(prompt.ids), thinking, opened, plan)
    return await until_disconnected(request, work, ticket)


def check_constraint(svc: Service, params: Any) -> Any:
    """400 when a constraint (guided_*, response_format) meets a backend that cannot enforce it."""
    so = params.structured_outputs
    if so is not None and not svc.backend.capabilities.structured_outputs:
        raise bad_request(f"the {svc.backend.name} backend does not do constrained decoding", param=so.param)
    return params


def chat_tools(svc: Service, target: Target, req: P.ChatCompletionRequest) -> tuple[ToolPlan, Any]:
    """The request's tool plan and output constraint (tool_choice's or response_format's)."""
    caps = svc.backend.capabilities
    plan = plan_tools([t.as_dict() for t in req.tools or []], req.tool_choice, req.parallel_tool_calls,
                      svc.backend.chat_template(target.adapter), caps.structured_outputs, svc.backend.name)
    fmt = req.response_format.constraint() if req.response_format else None
    if fmt is not None and plan.constraint is not None:
        raise bad_request("response_format cannot be combined with a forced tool_choice", param="response_format")
    if fmt is not None and not caps.structured_outputs:
        raise bad_request(f"the {svc.backend.name} backend does not do constrained decoding",
                          param="response_format")
    return plan, plan.constraint or fmt


class _Acc:
    """Everything one choice produced."""

    def __init__(self) -> None:
        self.text, self.tokens, self.reason = "", 0, None
        self.logprobs: list[TokenLogprob] = []

    def add(self, d: Delta) -> None:
        self.text += d.text
        self.tokens += len(d.token_ids)
        self.logprobs += d.logprobs or []
        self.reason = d.finish_reason or self.reason


async def _collect(events: AsyncIterator[tuple[int, Delta]]) -> dict[int, _Acc]:
    accs: dict[int, _Acc] = {}
    async for i, delta in events:
        accs.setdefault(i, _Acc()).add(delta)
    return accs


async def _chat_collect(events, rid: str, target: Target, n_prompt: int, thinking: bool,
                        opened: bool, plan: ToolPlan) -> dict[str, Any]:
    accs = await _collect(events)
    choices = []
    for i, acc in sorted(accs.items()):
        reasoning, content = split_reasoning(acc.text, opened) if thinking else (None, acc.text)
        content, calls = parse_tool_calls(plan.fmt, content, plan.max_calls) if plan.fmt else (content, [])
        message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            message["tool_calls"] = [c.to_openai() for c in calls]
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        choices.append({"index": i, "message": message, "finish_reason": finish_reason(acc.reason, calls),
                        "logprobs": chat_logprobs(acc.logprobs) if acc.logprobs else None})
    use = P.usage(n_prompt, sum(a.tokens for a in accs.values()))
    return P.chat_response(rid, target.name, choices, use)


async def _chat_sse(events, rid: str, target: Target, req: P.ChatCompletionRequest, n_prompt: int,
                    thinking: bool, opened: bool, plan: ToolPlan) -> AsyncIterator[str]:
    created, with_usage = int(time.time()), bool(req.stream_options and req.stream_options.include_usage)
    parsers = {i: ReasoningParser(opened) for i in range(req.n)}
    tool_parsers = {i: plan.parser() for i in range(req.n)}
    chunk = lambda choices: sse_event(P.chat_chunk(rid, target.name, created, choices, with_usage))
    completion_tokens = 0
    for i in range(req.n):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        async for i, d in events:
            completion_tokens += len(d.token_ids)
            r, c = parsers[i].step(d.text, bool(d.finish_reason)) if thinking else ("", d.text)
            c, calls = tool_step(tool_parsers[i], c, bool(d.finish_reason))
            body = _chat_delta(i, r, c, d, calls)
            if body is not None:
                yield chunk([body])
            if d.finish_reason:
                made = tool_parsers[i].calls if tool_parsers[i] else []
                yield chunk([{"index": i, "delta": {}, "finish_reason": finish_reason(d.finish_reason, made)}])
        if with_usage:
            yield sse_event({**P.chat_chunk(rid, target.name, created, [], False),
                             "usage": P.usage(n_prompt, completion_tokens)})
    except Exception as err:  # the 200 header is already sent: report in-band
        yield sse_event(error_payload(err))
    yield sse_event("[DONE]")


def _chat_delta(i: int, reasoning: str, content: str, d: Delta, calls: list[dict]) -> dict | None:
    delta: dict[str, Any] = {}
    if reasoning:
        delta["reasoning_content"] = reasoning
    if content:
        delta["content"] = content
    if calls:
        delta["tool_calls"] = calls
    if not delta and not d.logprobs:
        return None
    body: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": None}
    if d.logprobs:
        body["logprobs"] = chat_logprobs(d.logprobs)
    return body


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    """Chat-style logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    entry = lambda tok, lp: {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}
    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, b) for a, b in t.top_text()]}
                        for t in items]}


# ---- completions --------------------------------------------------------------------------------


def completion_prompt(svc: Service, req: P.CompletionRequest) -> list[int]:
    """`prompt` as text or token ids -> ids."""
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise bad_request("a list of several prompts is not supported; send one prompt",
                              param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return svc.backend.encode_text(prompt).ids
    if not prompt:
        raise bad_request("prompt is empty", param="prompt")
    return list(prompt)


@router.post("/v1/completions")
async def completions(req: P.CompletionRequest, request: Request):
    """Text completion, streamed as SSE or returned whole."""
    svc = await service_for(request, req.model)
    target = svc.resolve(req.model)
    if req.echo or req.suffix:
        raise bad_request("echo and suffix are not supported", param="echo" if req.echo else "suffix")
    svc.check_n(req.n)
    svc.check_logprobs(req.logprobs is not None)
    ids = completion_prompt(svc, req)
    defaults = svc.sampling_defaults(target)
    max_tokens = svc.max_tokens_for(len(ids), req.max_tokens or defaults.get("max_tokens"), "prompt")
    params = check_constraint(svc, req.to_sampling_params(max_tokens, None, defaults))
    svc.check_stop(params.stop, "stop")
    ticket = svc.admit(req.n)
    rid = P.new_id("cmpl")
    events = svc.stream(rid, ids, params, target)
    if req.stream:
        events = await started(events, ticket)
        return ReleasingStream(_completion_sse(events, rid, target, req, len(ids)), ticket,
                               "text/event-stream")
    return await until_disconnected(request, _completion_collect(events, rid, target, len(ids)), ticket)


async def _completion_collect(events, rid: str, target: Target, n_prompt: int) -> dict[str, Any]:
    accs = await _collect(events)
    choices = [{"index": i, "text": a.text, "finish_reason": a.reason,
                "logprobs": completion_logprobs(a.logprobs, 0) if a.logprobs else None}
               for i, a in sorted(accs.items())]
    return P.completion_response(rid, target.name, choices,
                                 P.usage(n_prompt, sum(a.tokens for a in accs.values())))


async def _completion_sse(events, rid: str, target: Target, req: P.CompletionRequest,
                          n_prompt: int) -> AsyncIterator[str]:
    created, with_usage = int(time.time()), bool(req.stream_options and req.stream_options.include_usage)
    offsets = [0] * req.n
    completion_tokens = 0
    try:
        async for i, d in events:
            completion_tokens += len(d.token_ids)
            lp = completion_logprobs(d.logprobs, offsets[i]) if d.logprobs else None
            offsets[i] += len(d.text)
            choice = {"index": i, "text": d.text, "finish_reason": d.finish_reason, "logprobs": lp}
            yield sse_event(P.completion_response(rid, target.name, [choice], None, created)
                            | ({"usage": None} if with_usage else {}))
        if with_usage:
            yield sse_event(P.completion_response(rid, target.name, [],
                                                  P.usage(n_prompt, completion_tokens), created))
    except Exception as err:  # the 200 header is already sent: report in-band
        yield sse_event(error_payload(err))
    yield sse_event("[DONE]")


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """Legacy completions logprobs: parallel lists plus text offsets."""
    offsets, pos = [], offset
    for t in items:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [t.token for t in items], "token_logprobs": [t.logprob for t in items],
            "top_logprobs": [dict(t.top_text()) for t in items], "text_offset": offsets}
