"""Schemas of OpenAI's Responses API (`POST /v1/responses`), served statelessly.

The request is validated here and mapped onto the engine's `SamplingParams` through the
one mapping (`protocol.sampling_values`); `input` items become the chat messages the chat
template takes (`tool_items` for calls and results). An `input_image` part becomes an `<image>`
marker and one image ref, as the chat route's image_url parts do (serve/images.py checks them).
Fields tunelab cannot honour (stateful, hosted) are `field_policy.TABLE`'s: a 400 saying why,
never dropped.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunelab.engine.config import SamplingParams
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.serve.errors import bad_request
from tunelab.serve.images import IMAGE_MARKER, Ref
from tunelab.serve.protocol import Text, sampling_values
from tunelab.serve.strict import Kinds, RequestModel, policies_of
from tunelab.serve.tool_items import add_call, add_result

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


class ItemModel(BaseModel):
    """An input item or part: its `type` is judged first, then any key it should not carry."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    KINDS: ClassVar[Kinds | None] = None  # which declared fields each `type` carries

    def check_extra(self, where: str) -> None:
        """A 400 naming the first key this item carries that is not served (field_policy.TABLE's
        entries for the class pass when accepted, or when rejected but set to a "not used" value), or
        that its `type` does not carry (strict.Kinds: a text part's image_url)."""
        for key, value in (self.model_extra or {}).items():
            policy = policies_of(type(self)).get(key)
            if policy is None or not policy.allows(value):
                why = f": {policy.why}" if policy else ""
                raise bad_request(f"unsupported field '{where}.{key}'{why}", param=f"{where}.{key}")
        if self.KINDS is not None:
            given = {name: getattr(self, name) for name in self.model_fields_set}
            stray = self.KINDS.stray(getattr(self, self.KINDS.key), given)
            if stray:
                raise bad_request(f"unsupported field '{where}.{stray[0]}'{stray[1]}", param=f"{where}.{stray[0]}")


class InputPart(ItemModel):
    """One content part of an input message: input_text (or output_text of an earlier reply), or an
    input_image whose `image_url` is a base64 data URL."""

    KINDS: ClassVar[Kinds] = Kinds("type", "part", frozenset(), {
        "input_text": frozenset({"text"}), "text": frozenset({"text"}),
        "output_text": frozenset({"text", "annotations", "logprobs"}),
        "input_image": frozenset({"image_url", "detail"})})

    type: str
    text: Text | None = None
    image_url: Text | None = None
    detail: str | None = None  # only "auto": "low"/"high"/"original" would change what the model sees
    annotations: list[Any] | None = None  # an earlier reply's, sent back as context
    logprobs: list[Any] | None = None


class InputItem(ItemModel):
    """An input item: a message (the `type` may be left out), an earlier reasoning item, a function call or
    its output."""

    KINDS: ClassVar[Kinds] = Kinds("type", "item", frozenset({"id", "status"}), {
        "message": frozenset({"role", "content", "phase"}),
        "reasoning": frozenset({"summary", "content", "encrypted_content"}),
        "function_call": frozenset({"call_id", "name", "arguments"}),
        "function_call_output": frozenset({"call_id", "output", "name"})})

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Text | list[InputPart] | None = None
    id: str | None = None
    status: str | None = None
    summary: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    phase: str | None = None  # an earlier reply's label (commentary | final_answer)
    call_id: str | None = None  # function_call and function_call_output items
    name: str | None = None
    arguments: str | None = None
    output: Text | list[InputPart] | None = None


class ReasoningConfig(RequestModel):
    """`reasoning`: effort "none" turns a thinking model's thinking off; summary returns the thinking."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class TextConfig(RequestModel):
    """`text`: the output format (text, json_object, json_schema)."""

    format: dict[str, Any] | None = None


class ResponsesRequest(RequestModel):
    """POST /v1/responses."""

    model: Text
    input: Text | list[InputItem]
    instructions: Text | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None  # echoed back; nothing is stored
    # stateful and hosted fields are field_policy.TABLE's: a 400 saying why, or accepted on purpose

    def to_sampling_params(self, max_tokens: int, structured: StructuredOutputsParams | None,
                           defaults: dict[str, Any] | None = None) -> SamplingParams:
        """temperature/top_p by the one mapping over the model's `defaults`; `max_tokens` as checked,
        `structured` the constraint."""
        return SamplingParams(**{**sampling_values(self, None, defaults), "max_tokens": max_tokens},
                              structured_outputs=structured)

    def text_constraint(self) -> StructuredOutputsParams | None:
        """`text.format` (json_object, json_schema) as the engine's constraint; a bad schema is a 400."""
        fmt = (self.text.format if self.text else None) or {"type": "text"}
        if fmt.get("type") == "json_object":
            return StructuredOutputsParams(json_object=True, param="text.format")
        if fmt.get("type") == "json_schema":
            params = StructuredOutputsParams(json=fmt.get("schema") or {}, param="text.format.schema")
            params.check()
            return params
        if fmt.get("type") != "text":
            raise bad_request(f"text.format.type '{fmt.get('type')}' is not served; use text, json_object or "
                              "json_schema", param="text.format.type")
        return None

    def messages(self) -> tuple[list[dict[str, Any]], list[Ref]]:
        """`instructions` + `input` as chat messages (tool calls and results in the one tool shape), and
        the image refs of their `<image>` markers, in order."""
        items = [InputItem(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        turns = [{"role": "system", "content": self.instructions}] if self.instructions else []
        refs: list[Ref] = []
        for i, item in enumerate(items):
            _add_item(turns, refs, item, i)
        return turns, refs

    def summary_wanted(self) -> bool:
        """Whether the thinking goes out as a reasoning summary (else as reasoning_text content)."""
        r = self.reasoning
        return bool(r and (r.summary or r.generate_summary))

    def template_kwargs(self) -> dict[str, Any]:
        """reasoning.effort "none" asks a thinking template (Qwen3's) not to think."""
        return {"enable_thinking": False} if self.reasoning and self.reasoning.effort == "none" else {}


def _add_item(turns: list[dict[str, Any]], refs: list[Ref], item: InputItem, i: int) -> None:
    """One input item onto the chat turns; earlier reasoning items carry nothing to re-send."""
    if item.type not in ("message", "reasoning", "function_call", "function_call_output"):
        raise bad_request(f"unsupported input item type '{item.type}': only messages, reasoning, "
                          "function_call and function_call_output items are served", param=f"input.{i}.type")
    item.check_extra(f"input.{i}")
    if item.type == "function_call":
        add_call(turns, item.call_id or item.id or f"call_{i}", item.name or "", item.arguments or "{}")
    elif item.type == "function_call_output":
        add_result(turns, item.call_id or "", _text(item.output, i, "output"), item.name)
    elif item.type == "reasoning":
        return
    elif item.role is None:
        raise bad_request("a message needs a role", param=f"input.{i}.role")
    else:
        turns.append({"role": _ROLES[item.role], "content": _text(item.content, i, refs=refs)})


def _text(content: str | list[InputPart] | None, i: int, key: str = "content", refs: list[Ref] | None = None) -> str:
    """A message's (or a call output's) text; an input_image part leaves its marker and puts its ref on
    `refs` (None: no images here, as in a function_call_output)."""
    if content is None or isinstance(content, str):
        return content or ""
    kinds = ("input_text", "output_text", "text") + (("input_image",) if refs is not None else ())
    pieces = []
    for j, part in enumerate(content):
        where = f"input.{i}.{key}.{j}"
        if part.type not in kinds:
            raise bad_request(f"'{part.type}' parts are not supported here; send {', '.join(kinds)} parts",
                              param=f"{where}.type")
        part.check_extra(where)
        pieces.append(_image(part, where, refs) if part.type == "input_image" else part.text or "")
    return "".join(pieces)


def _image(part: InputPart, where: str, refs: list[Ref]) -> str:
    """An input_image part's marker; its image_url goes on `refs` for serve/images.py to check."""
    if part.detail not in (None, "auto"):
        raise bad_request(f"{where}.detail: '{part.detail}' is not served; images are sized the way the "
                          "model's processor sizes them (detail 'auto')", param=f"{where}.detail")
    if not part.image_url:
        raise bad_request(f"{where}.image_url: an input_image needs image_url (a base64 data URL)",
                          param=f"{where}.image_url")
    refs.append((part.image_url, where))
    return IMAGE_MARKER


# ---- response objects ---------------------------------------------------------------------


def response_object(rid: str, req: ResponsesRequest, model: str, created: float, status: str,
                    output: list[dict], usage: dict | None, incomplete: str | None = None) -> dict:
    """A `response` object; `status` in_progress | completed | incomplete."""
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
            "output": output, "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "tools": req.tools or [],
            "tool_choice": req.tool_choice or "auto",
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "text": {"format": (req.text.format if req.text else None) or {"type": "text"}},
            "reasoning": req.reasoning.model_dump() if req.reasoning else None, "store": False,
            "previous_response_id": None, "truncation": "disabled", "metadata": req.metadata or {},
            "incomplete_details": {"reason": incomplete} if incomplete else None, "error": None,
            "usage": usage, "completed_at": time.time() if status != "in_progress" else None}


def usage(prompt: int, output: int, reasoning: int) -> dict[str, Any]:
    """Responses-style usage: input/output tokens with their details."""
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + output}


def message_item(mid: str, text: str, status: str) -> dict[str, Any]:
    """An assistant output message with one output_text part."""
    content = [output_text(text)] if status != "in_progress" else []
    return {"id": mid, "type": "message", "role": "assistant", "status": status, "content": content}


def output_text(text: str) -> dict[str, Any]:
    """An output_text content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(fid: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A function_call output item."""
    return {"id": fid, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def reasoning_item(rid: str, text: str, as_summary: bool, status: str) -> dict[str, Any]:
    """A reasoning item: the thinking as a summary, or as reasoning_text content."""
    done = status != "in_progress"
    summary = [{"type": "summary_text", "text": text}] if as_summary and done else []
    content = [{"type": "reasoning_text", "text": text}] if not as_summary and done else []
    return {"id": rid, "type": "reasoning", "status": status, "summary": summary, "content": content}
