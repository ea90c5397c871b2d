"""The wire formats `tunelab bench serve` speaks: one small class per API.

Each builds a streaming request and reads the stream one line at a time, returning the
text that line carried (what TTFT and ITL time) and noting token counts when the server
reports them. A line reporting an error raises `StreamError`.

    openai     /v1/completions or /v1/chat/completions (SSE, `data: [DONE]`)
    responses  /v1/responses (SSE typed events, usage on response.completed)
    anthropic  /v1/messages (SSE events, usage on message_start and message_delta)
    ollama     /api/generate or /api/chat (NDJSON, counts on the `done` line)
"""

from __future__ import annotations

import json
from typing import Any


class StreamError(Exception):
    """The server reported an error inside the stream."""


class OpenAI:
    """OpenAI's completions and chat completions."""

    name = "openai"

    def request(self, cfg: Any, model: str, prompt: Any) -> tuple[str, dict[str, Any]]:
        """Path and JSON body of one streaming request."""
        body: dict[str, Any] = {"model": model, "max_tokens": cfg.output_len, "stream": True,
                                "stream_options": {"include_usage": True}, "temperature": 0.0}
        if cfg.ignore_eos:
            body["ignore_eos"] = True  # fixed output lengths; servers without it ignore the field
        if cfg.endpoint == "chat" or isinstance(prompt, list):
            return "/v1/chat/completions", {**body, "messages": _messages(prompt)}
        return "/v1/completions", {**body, "prompt": prompt}

    def read(self, line: str, counts: dict[str, int]) -> tuple[str, bool]:
        """(text, finished) of one stream line; usage goes into `counts`."""
        data = _data(line)
        if data is None:
            return "", False
        if data == "[DONE]":
            return "", True
        chunk = json.loads(data)
        if "error" in chunk:
            raise StreamError(str(chunk["error"].get("message", chunk["error"])))
        usage = chunk.get("usage") or {}
        _count(counts, usage.get("prompt_tokens"), usage.get("completion_tokens"))
        choices = chunk.get("choices") or [{}]
        delta = choices[0].get("delta") or {}
        return choices[0].get("text") or delta.get("content") or delta.get("reasoning_content") or "", False


class Responses:
    """OpenAI's Responses API."""

    name = "responses"

    def request(self, cfg: Any, model: str, prompt: Any) -> tuple[str, dict[str, Any]]:
        """Path and JSON body of one streaming request (no ignore_eos: the API has none)."""
        return "/v1/responses", {"model": model, "input": _messages(prompt), "stream": True,
                                 "max_output_tokens": cfg.output_len, "temperature": 0.0}

    def read(self, line: str, counts: dict[str, int]) -> tuple[str, bool]:
        """(text, finished) of one stream line; usage goes into `counts`."""
        event = _event(line)
        kind = event.get("type", "")
        if kind == "error":
            raise StreamError(event.get("message", "error"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            usage = event["response"].get("usage") or {}
            _count(counts, usage.get("input_tokens"), usage.get("output_tokens"))
            return "", True
        text = kind.endswith(".delta") and ("text" in kind or "arguments" in kind)
        return (event.get("delta", "") if text else ""), False


class Anthropic:
    """Anthropic's Messages API."""

    name = "anthropic"

    def request(self, cfg: Any, model: str, prompt: Any) -> tuple[str, dict[str, Any]]:
        """Path and JSON body of one streaming request."""
        return "/v1/messages", {"model": model, "messages": _messages(prompt), "stream": True,
                                "max_tokens": cfg.output_len, "temperature": 0.0}

    def read(self, line: str, counts: dict[str, int]) -> tuple[str, bool]:
        """(text, finished) of one stream line; usage goes into `counts`."""
        event = _event(line)
        kind = event.get("type", "")
        if kind == "error":
            raise StreamError(event.get("error", {}).get("message", "error"))
        if kind == "message_start":
            _count(counts, event["message"].get("usage", {}).get("input_tokens"), None)
        if kind == "message_delta":
            _count(counts, None, event.get("usage", {}).get("output_tokens"))
        delta = event.get("delta", {}) if kind == "content_block_delta" else {}
        piece = delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
        return piece, kind == "message_stop"


class Ollama:
    """Ollama's generate and chat."""

    name = "ollama"

    def request(self, cfg: Any, model: str, prompt: Any) -> tuple[str, dict[str, Any]]:
        """Path and JSON body of one streaming request (Ollama has no ignore_eos)."""
        options = {"num_predict": cfg.output_len, "temperature": 0.0}
        body = {"model": model, "stream": True, "options": options}
        if cfg.endpoint == "chat" or isinstance(prompt, list):
            return "/api/chat", {**body, "messages": _messages(prompt)}
        return "/api/generate", {**body, "prompt": prompt, "raw": True}

    def read(self, line: str, counts: dict[str, int]) -> tuple[str, bool]:
        """(text, finished) of one NDJSON line; counts come on the `done` line."""
        if not line.strip():
            return "", False
        obj = json.loads(line)
        if "error" in obj:
            raise StreamError(str(obj["error"]))
        message = obj.get("message") or {}
        text = obj.get("response") or message.get("content") or message.get("thinking") or obj.get("thinking")
        if obj.get("done"):
            _count(counts, obj.get("prompt_eval_count"), obj.get("eval_count"))
        return text or "", bool(obj.get("done"))


STREAMING = {api.name: api for api in (OpenAI(), Responses(), Anthropic(), Ollama())}


def headers(api: str, key: str | None) -> dict[str, str]:
    """Auth headers: Bearer for every API, plus Anthropic's x-api-key and version."""
    out = {"Authorization": f"Bearer {key}"} if key else {}
    if api == "anthropic":
        out.update({"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})})
    return out


def _messages(prompt: Any) -> list[dict[str, Any]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _data(line: str) -> str | None:
    return line[5:].strip() if line.startswith("data:") else None


def _event(line: str) -> dict[str, Any]:
    data = _data(line)
    return json.loads(data) if data and data != "[DONE]" else {}


def _count(counts: dict[str, int], prompt: int | None, output: int | None) -> None:
    if prompt is not None:
        counts["prompt"] = prompt
    if output is not None:
        counts["output"] = output
