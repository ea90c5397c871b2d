"""Schemas of Anthropic's Messages API (`POST /v1/messages`).

The request maps onto the engine's `SamplingParams` through the one mapping
(`protocol.sampling_values`, `stop_sequences` renamed to `stop`); `system` and text blocks
become the plain chat messages the chat template takes. An `image` block (base64 source, or a
URL source that serve/images.py refuses as remote) becomes an `<image>` marker and one image ref,
as the chat route's image_url parts do. Tool definitions, tool_use and tool_result blocks map onto
the one tool shape (`serve/tool_items.py`); other block kinds and server tools are a 400 naming them.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import Field

from tunelab.engine.config import SamplingParams
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.images import IMAGE_MARKER, Ref
from tunelab.serve.protocol import Text, sampling_values
from tunelab.serve.strict import Kinds, RequestModel
from tunelab.serve.responses_protocol import ItemModel
from tunelab.serve.tool_items import add_call, add_result

_EARLIER_THINKING = ("thinking", "redacted_thinking")  # a reply's own thinking, sent back: not re-rendered
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")  # what Anthropic's base64 source takes


class ImageSource(ItemModel):
    """An image block's `source`: base64 data, or a URL (remote URLs are off: serve/images.py)."""

    KINDS: ClassVar[Kinds] = Kinds("type", "image source", frozenset(),
                                   {"base64": frozenset({"media_type", "data"}), "url": frozenset({"url"})})

    type: str
    media_type: str | None = None
    data: str | None = None
    url: Text | None = None

    def ref(self, where: str) -> str:
        """The image as the URL serve/images.py checks: base64 data as a data URL, a URL as it is."""
        self.check_extra(where)
        if self.type == "base64" and self.media_type not in MEDIA_TYPES:
            raise bad_request(f"{where}.media_type: '{self.media_type}' is not one of {', '.join(MEDIA_TYPES)}",
                              param=f"{where}.media_type")
        if self.type == "base64":
            return f"data:{self.media_type};base64,{self.data or ''}"
        if self.type == "url":
            return self.url or ""
        raise bad_request(f"{where}.type: image source type '{self.type}' is not served; send base64 data",
                          param=f"{where}.type")


class ContentBlock(ItemModel):
    """A content block: text, an image, a tool call or its result (thinking blocks of earlier replies are
    taken and skipped); each carries only its own kind's fields."""

    KINDS: ClassVar[Kinds] = Kinds("type", "block", frozenset(), {
        "text": frozenset({"text", "citations", "cache_control"}),
        "image": frozenset({"source", "cache_control"}),
        "thinking": frozenset({"thinking", "signature"}),
        "redacted_thinking": frozenset({"data"}),
        "tool_use": frozenset({"id", "name", "input", "cache_control"}),
        "tool_result": frozenset({"tool_use_id", "content", "is_error", "cache_control"})})

    type: str
    text: Text | None = None
    source: ImageSource | None = None  # image blocks
    cache_control: dict[str, Any] | None = None  # a prompt-cache hint; never changes the output
    citations: list[Any] | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    id: str | None = None  # tool_use: an earlier reply's call
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None  # tool_result: the call it answers
    content: str | list[ContentBlock] | None = None  # tool_result: its text blocks
    is_error: bool | None = None


class AnthropicMessage(RequestModel):
    """One turn: user or assistant, a string or content blocks."""

    role: Literal["user", "assistant"]
    content: Text | list[ContentBlock]


class ThinkingConfig(RequestModel):
    """`thinking`: disabled asks a thinking template (Qwen3's) not to think; else it may think."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1)  # a thinking template has no budget to set: taken as is
    display: Literal["summarized"] | None = None  # the thinking is returned as it is


class MessagesRequest(RequestModel):
    """POST /v1/messages (and /v1/messages/count_tokens, which needs no max_tokens)."""

    model: Text
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: Text | list[ContentBlock] | None = None
    stop_sequences: list[Text] | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    thinking: ThinkingConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None  # effort is a hint; format (structured output) is a 400
    # hosted and billing fields are field_policy.TABLE's: a 400 saying why, or accepted on purpose

    def to_sampling_params(self, max_tokens: int, structured: StructuredOutputsParams | None,
                           defaults: dict[str, Any] | None = None) -> SamplingParams:
        """temperature/top_p/top_k/stop_sequences by the one mapping over the model's `defaults`;
        `max_tokens` as checked, `structured` a forced tool call's constraint."""
        values = sampling_values(self, {"stop_sequences": "stop"}, defaults)
        values.pop("max_tokens", None)
        return SamplingParams(**{**values, "max_tokens": max_tokens}, structured_outputs=structured)

    def unsupported(self) -> APIError | None:
        """The first field set to something this text-only server cannot do, as a 400."""
        checks = [("output_config.format", bool((self.output_config or {}).get("format")),
                   "structured outputs are not served on /v1/messages yet")]
        for field, bad, why in checks:
            if bad:
                return bad_request(f"unsupported field '{field}': {why}", param=field)
        return None

    def chat_messages(self) -> tuple[list[dict[str, Any]], list[Ref]]:
        """`system` + `messages` as chat messages (tool_use and tool_result in the one tool shape), and
        the image refs of their `<image>` markers, in order."""
        turns = [{"role": "system", "content": _text(self.system, "system")}] if self.system else []
        refs: list[Ref] = []
        for i, m in enumerate(self.messages):
            if isinstance(m.content, str):
                turns.append({"role": m.role, "content": m.content})
            else:
                _add_blocks(turns, refs, m.role, m.content, f"messages.{i}.content")
        return turns, refs

    def template_kwargs(self) -> dict[str, Any]:
        """thinking disabled -> enable_thinking false for templates that read it."""
        return {"enable_thinking": False} if self.thinking and self.thinking.type == "disabled" else {}


def _add_blocks(turns: list[dict[str, Any]], refs: list[Ref], role: str, blocks: list[ContentBlock],
                where: str) -> None:
    """A turn's blocks in order: text and image runs become turns, calls join the assistant turn, results
    are turns."""
    run: list[str] = []
    for j, block in enumerate(blocks):
        if block.type not in ("tool_use", "tool_result"):
            run.append(_block_text(block, f"{where}.{j}", refs))
            continue
        if run:
            turns.append({"role": role, "content": "".join(run)})
            run = []
        block.check_extra(f"{where}.{j}")
        if block.type == "tool_use":
            add_call(turns, block.id or f"toolu_{j}", block.name or "", json.dumps(block.input or {}))
        else:
            add_result(turns, block.tool_use_id or "", _result_text(block.content, f"{where}.{j}.content"))
    if run or not blocks:
        turns.append({"role": role, "content": "".join(run)})


def _result_text(content: str | list[ContentBlock] | None, where: str) -> str:
    """A tool_result's content: a string or text blocks (an image or document in it is a 400)."""
    if content is None or isinstance(content, str):
        return content or ""
    for k, part in enumerate(content):
        if part.type != "text":
            raise bad_request(f"{where}.{k}.type: a tool_result serves text blocks only, not "
                              f"'{part.type}'", param=f"{where}.{k}.type")
        part.check_extra(f"{where}.{k}")
    return "".join(part.text or "" for part in content)


def _text(content: str | list[ContentBlock] | None, where: str) -> str:
    """A string, or the text of text blocks; any other block is a 400 naming its type."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(_block_text(block, f"{where}.{j}") for j, block in enumerate(content))


def _block_text(block: ContentBlock, where: str, refs: list[Ref] | None = None) -> str:
    """A text block's text ("" for an earlier reply's thinking); an image block's marker, its ref put on
    `refs` (None: no images here, as in `system`); any other kind is a 400."""
    kinds = ("text",) if refs is None else ("text", "image") + _EARLIER_THINKING
    if block.type not in kinds:  # Anthropic's errors carry no param: the message names the field
        served = "system takes text blocks only" if refs is None else \
            "messages take text, image, tool_use and tool_result blocks"
        raise bad_request(f"{where}.type: unsupported content block type '{block.type}': {served}",
                          param=f"{where}.type")
    block.check_extra(where)
    if block.type in _EARLIER_THINKING:
        return ""
    if block.type == "text":
        return block.text or ""
    if block.source is None:
        raise bad_request(f"{where}.source: an image block needs a source", param=f"{where}.source")
    refs.append((block.source.ref(f"{where}.source"), where))
    return IMAGE_MARKER


# ---- response objects ---------------------------------------------------------------------


def message_object(mid: str, model: str, content: list[dict], stop_reason: str | None,
                   stop_sequence: str | None, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """An Anthropic `message` object."""
    return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage(input_tokens, output_tokens)}


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic usage (no prompt caching: the cache counts are 0)."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def stop_reason(finish_reason: str | None, stop_string: str | None, stops: list[str],
                called: bool = False) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of the engine's finish: max_tokens, stop_sequence, tool_use, end_turn."""
    if finish_reason == "length":
        return "max_tokens", None
    if called:
        return "tool_use", None
    if stop_string is not None and stop_string in stops:
        return "stop_sequence", stop_string
    return "end_turn", None
