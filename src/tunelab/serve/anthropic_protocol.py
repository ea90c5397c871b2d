"""Schemas of Anthropic's Messages API (`POST /v1/messages`), text only.

The request maps onto the engine's `SamplingParams` through the one mapping
(`protocol.sampling_values`, `stop_sequences` renamed to `stop`); `system` and text blocks
become the plain chat messages the chat template takes. Tool use and other block kinds
are declared so that the route can answer a 400 naming them (`unsupported()`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunelab.engine.config import SamplingParams
from tunelab.serve.errors import APIError, bad_request
from tunelab.serve.protocol import Text, _Lenient, sampling_values
from tunelab.serve.responses_protocol import ItemModel

TOOLS_MISSING = "tool use is not served on /v1/messages yet"
_EARLIER_THINKING = ("thinking", "redacted_thinking")  # a reply's own thinking, sent back: not re-rendered


class ContentBlock(ItemModel):
    """A content block: text (thinking blocks of earlier replies are taken and skipped)."""

    type: str
    text: Text | None = None
    cache_control: dict[str, Any] | None = None  # a prompt-cache hint; never changes the output
    citations: list[Any] | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class AnthropicMessage(_Lenient):
    """One turn: user or assistant, a string or content blocks."""

    role: Literal["user", "assistant"]
    content: Text | list[ContentBlock]


class ThinkingConfig(_Lenient):
    """`thinking`: disabled asks a thinking template (Qwen3's) not to think; else it may think."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1)  # a thinking template has no budget to set: taken as is
    display: Literal["summarized"] | None = None  # the thinking is returned as it is


class MessagesRequest(_Lenient):
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
    metadata: dict[str, Any] | None = None  # user_id for abuse monitoring; never changes the output
    service_tier: str | None = None  # a billing tier; one local tier, same output
    cache_control: dict[str, Any] | None = None  # a prompt-cache hint
    speed: str | None = None  # a latency tier; same output
    inference_geo: str | None = None  # where the request runs: here
    diagnostics: dict[str, Any] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None
    output_config: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    container: str | dict[str, Any] | None = None

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """temperature/top_p/top_k/stop_sequences by the one mapping; `max_tokens` as checked."""
        values = sampling_values(self, {"stop_sequences": "stop"})
        values.pop("max_tokens", None)
        return SamplingParams(**{**values, "max_tokens": max_tokens})

    def unsupported(self) -> APIError | None:
        """The first field set to something this text-only server cannot do, as a 400."""
        checks = [("tools", bool(self.tools), TOOLS_MISSING),
                  ("tool_choice", self.tool_choice is not None and self.tool_choice.get("type") != "none",
                   TOOLS_MISSING),
                  ("mcp_servers", bool(self.mcp_servers), "MCP servers are not served"),
                  ("container", self.container is not None, "code execution containers are not served"),
                  ("output_config.format", bool((self.output_config or {}).get("format")),
                   "structured outputs are not served on /v1/messages yet")]
        for field, bad, why in checks:
            if bad:
                return bad_request(f"unsupported field '{field}': {why}", param=field)
        return None

    def chat_messages(self) -> list[dict[str, str]]:
        """`system` + `messages` as {role, content} chat messages."""
        turns = [{"role": "system", "content": _text(self.system, "system")}] if self.system else []
        for i, m in enumerate(self.messages):
            turns.append({"role": m.role, "content": _text(m.content, f"messages.{i}.content")})
        return turns

    def template_kwargs(self) -> dict[str, Any]:
        """thinking disabled -> enable_thinking false for templates that read it."""
        return {"enable_thinking": False} if self.thinking and self.thinking.type == "disabled" else {}


def _text(content: str | list[ContentBlock] | None, where: str) -> str:
    """A string, or the text of text blocks; any other block is a 400 naming its type."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, block in enumerate(content):
        if block.type in _EARLIER_THINKING:
            continue
        if block.type != "text":
            tools = block.type.startswith(("tool_", "server_tool"))
            why = TOOLS_MISSING if tools else "this model serves text only"
            # Anthropic's errors carry no param: the message names the field
            raise bad_request(f"{where}.{j}.type: unsupported content block type '{block.type}': {why}",
                              param=f"{where}.{j}.type")
        block.check_extra(f"{where}.{j}")
        parts.append(block.text or "")
    return "".join(parts)


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


def stop_reason(finish_reason: str | None, stop_string: str | None,
                stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) from the engine's finish: max_tokens, stop_sequence or end_turn."""
    if finish_reason == "length":
        return "max_tokens", None
    if stop_string is not None and stop_string in stops:
        return "stop_sequence", stop_string
    return "end_turn", None
