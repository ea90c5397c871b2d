"""Request and response schemas of the OpenAI and Ollama APIs (the subset tunelab serves).

Requests are validated here, so a wrong type or range becomes a 400 naming the field
before anything reaches the backend. No field is ignored silently: every schema is a
`strict.RequestModel`, so a field it does not declare is a 400 naming it, unless
`field_policy.TABLE` accepts it on purpose (it cannot change the output).

These models are HTTP schemas only. `to_sampling_params` maps a request, once, onto the
engine's `SamplingParams`, the one sampling type every backend takes: a request field
whose name is a `SamplingParams` field is copied as it is (None = its default), so a new
sampling option is a field there plus, to expose it, a field of the same name here.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field, Strict

from tunelab.engine.config import SamplingParams
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.errors import InvalidRequest
from tunelab.serve.strict import Kinds, RequestModel, unsupported_value
from tunelab.serve.tools_protocol import ResponseFormat, ToolCallIn, ToolChoice, ToolDefinition

Role = Literal["system", "developer", "user", "assistant", "tool"]


_Lenient = RequestModel  # old name, still imported by responses_protocol and anthropic_protocol


def _utf8(text: str) -> str:
    """Text must be encodable: JSON's \\ud800 escapes can smuggle in lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"holds a lone surrogate at character {err.start}; send valid "
                         f"Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]
TokenId = Annotated[int, Strict(), Field(ge=0)]  # strict: `true` is not token id 1


class ImageURL(RequestModel):
    """An `image_url` part's image: a base64 data URL (serve/images.py checks it)."""

    url: Text
    detail: Literal["auto"] | None = None  # "low"/"high" would change what the model sees: not served


class ContentPart(RequestModel):
    """One part of a multi-part message: text, or an image for a vision-language model."""

    KINDS: ClassVar[Kinds] = Kinds("type", "part", frozenset(),
                                   {"text": frozenset({"text"}), "image_url": frozenset({"image_url"})})

    type: str
    text: Text | None = None
    image_url: ImageURL | None = None

    @classmethod
    def check_raw(cls, data: dict[str, Any]) -> None:
        """An audio or file part is a 400 naming its `type`, before its other keys; an image part needs
        its image_url."""
        kind = data.get("type", "text")
        if kind not in ("text", "image_url"):
            raise unsupported_value("type", f"'{kind}' content parts are not supported; send text or "
                                            f"image_url parts")
        if kind == "image_url" and not isinstance(data.get("image_url"), dict):
            raise unsupported_value("image_url", "an image_url part needs image_url: {\"url\": a data URL}")


_NONE: frozenset[str] = frozenset()


class ChatMessage(RequestModel):
    """One chat turn: reasoning_content and tool_calls are an assistant's, tool_call_id a tool result's."""

    KINDS: ClassVar[Kinds] = Kinds("role", "message", frozenset({"content", "name"}), {
        "system": _NONE, "developer": _NONE, "user": _NONE, "tool": frozenset({"tool_call_id"}),
        "assistant": frozenset({"reasoning_content", "tool_calls"})})

    role: Role
    content: Text | list[ContentPart] | None = None
    name: Text | None = None
    reasoning_content: Text | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Text | None = None


class StreamOptions(RequestModel):
    """`stream_options`: include_usage adds a final chunk carrying usage."""

    include_usage: bool = False


_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


def sampling_values(request: BaseModel, renames: dict[str, str] | None = None,
                    defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's values of `SamplingParams` fields, matched by name after `renames`
    (API name -> engine name); None means "not given" and is left to the default.
    `defaults` (engine names) are the served model's own (a Modelfile's PARAMETERs): a field
    the request did not send takes the model's default, as in Ollama, not the schema's."""
    renames, defaults = renames or {}, defaults or {}
    sent = request.model_fields_set
    pairs = ((renames.get(name, name), getattr(request, name)) for name in type(request).model_fields
             if name in sent or renames.get(name, name) not in defaults)
    given = {name: value for name, value in pairs if name in _SAMPLING_FIELDS and value is not None}
    return {**defaults, **given}


class SamplingFields(RequestModel):
    """Parameters shared by /v1/chat/completions and /v1/completions."""

    model: Text
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: Text | list[Text] | None = None
    n: int = Field(1, ge=1)
    seed: int | None = None
    user: Text | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    guided_json: dict[str, Any] | Text | None = None  # vLLM's extras: one output constraint each
    guided_regex: Text | None = None
    guided_choice: list[Text] | None = None
    guided_grammar: Text | None = None

    def to_sampling_params(self, max_tokens: int, structured: StructuredOutputsParams | None = None,
                           defaults: dict[str, Any] | None = None) -> SamplingParams:
        """This request's sampling as the engine's type; `max_tokens` as checked against the context,
        `structured` the constraint of response_format or tool_choice (else a guided_* one),
        `defaults` the model's own (`Service.sampling_defaults`)."""
        structured = structured or self.guided()
        values = {**sampling_values(self, None, defaults), **self.engine_overrides(), "max_tokens": max_tokens}
        return SamplingParams(**values, structured_outputs=structured)

    def guided(self) -> StructuredOutputsParams | None:
        """vLLM's guided_json/regex/choice/grammar as the engine's constraint (at most one; checked)."""
        given = {k: getattr(self, f"guided_{k}") for k in ("json", "regex", "choice", "grammar")}
        given = {k: v for k, v in given.items() if v is not None}
        if not given:
            return None
        param = "guided_" + next(iter(given))
        params = StructuredOutputsParams(**given, param=param if len(given) == 1 else "guided_json")
        params.check()
        return params

    def engine_overrides(self) -> dict[str, Any]:
        """Fields whose HTTP meaning differs from the engine's, mapped by hand."""
        return {}


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def engine_overrides(self) -> dict[str, Any]:
        """Chat's `logprobs` is a switch and `top_logprobs` the count; the engine takes the count."""
        return {"logprobs": (self.top_logprobs or 0) if self.logprobs else None}


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: Text | list[TokenId] | list[Text]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: Text | None = None


class AdapterLoadRequest(RequestModel):
    """POST /v1/adapters."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-/]+$")
    path: Text = Field(min_length=1)


class LoraLoadRequest(RequestModel):
    """POST /v1/load_lora_adapter (vLLM's body)."""

    lora_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-/]+$")
    lora_path: Text = Field(min_length=1)


class LoraUnloadRequest(RequestModel):
    """POST /v1/unload_lora_adapter (vLLM's body; lora_int_id is accepted and not needed)."""

    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None


class OllamaMessage(RequestModel):
    """An Ollama chat turn: thinking and tool_calls are an assistant's, tool_name a tool result's."""

    KINDS: ClassVar[Kinds] = Kinds("role", "message", frozenset({"content", "images"}), {
        "system": _NONE, "developer": _NONE, "user": _NONE, "tool": frozenset({"tool_name"}),
        "assistant": frozenset({"thinking", "tool_calls"})})

    role: Role
    content: Text = ""
    thinking: Text | None = None
    images: list[str] | None = None  # base64, for a vision-language model (serve/images.py)
    tool_calls: list[ToolCallIn] | None = None
    tool_name: Text | None = None


class OllamaOptions(RequestModel):
    """Ollama `options` we honour; `field_policy.TABLE` says which others are accepted (resources
    only) and which are a 400 (Ollama itself ignores unknown ones; we name them)."""

    ENGINE_NAMES: ClassVar[dict[str, str]] = {"repeat_penalty": "repetition_penalty", "num_predict": "max_tokens"}
    DEFAULTS: ClassVar[dict[str, Any]] = {"temperature": 0.8}  # Ollama's, where it differs from ours

    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = None
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    num_predict: int | None = None
    seed: int | None = None
    stop: list[Text] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @classmethod
    def honoured(cls) -> list[str]:
        """The option names tunelab honours, so the PARAMETERs a Modelfile may set (field_policy's
        accepted-but-unused ones, such as num_ctx, are not: a model cannot carry what is not used)."""
        return list(cls.model_fields)

    def engine_defaults(self) -> dict[str, Any]:
        """These options as a model's sampling defaults, engine-named; num_predict <= 0 means none."""
        values = sampling_values(self, self.ENGINE_NAMES)
        if values.get("max_tokens", 1) <= 0:
            del values["max_tokens"]
        return values

    def to_sampling_params(self, max_tokens: int, structured: StructuredOutputsParams | None = None,
                           defaults: dict[str, Any] | None = None) -> SamplingParams:
        """These options as the engine's type (with `format`'s or tools' constraint, over the model's
        `defaults`); a bad value is a 400 naming `options.<name>`."""
        values = {**self.DEFAULTS, **sampling_values(self, self.ENGINE_NAMES, defaults), "max_tokens": max_tokens,
                  "structured_outputs": structured}
        try:
            return SamplingParams(**values)
        except InvalidRequest as err:
            api = {engine: name for name, engine in self.ENGINE_NAMES.items()}.get(err.param, err.param)
            detail = str(err).removeprefix(err.param or "")  # "top_k must be ...": name the option
            raise InvalidRequest(f"options.{api}{detail}", param=f"options.{api}") from None


class OllamaChatRequest(RequestModel):
    """POST /api/chat."""

    model: Text
    messages: list[OllamaMessage] = Field(default_factory=list)
    stream: bool = True
    options: OllamaOptions | None = None
    think: bool | None = None
    tools: list[ToolDefinition] | None = None
    format: Any = None  # "json" or a JSON schema: tools_protocol.ollama_format
    keep_alive: float | str | None = None  # serve.keep_alive: how long the model stays loaded after


class OllamaGenerateRequest(RequestModel):
    """POST /api/generate."""

    model: Text
    prompt: Text = ""
    system: Text | None = None
    raw: bool = False
    stream: bool = True
    options: OllamaOptions | None = None
    think: bool | None = None
    format: Any = None  # "json" or a JSON schema: tools_protocol.ollama_format
    keep_alive: float | str | None = None  # serve.keep_alive: how long the model stays loaded after
    images: list[str] | None = None  # base64, for a vision-language model (serve/images.py)


class OllamaShowRequest(RequestModel):
    """POST /api/show (older clients send `name`)."""

    model: Text | None = None
    name: Text | None = None


class OllamaCopyRequest(RequestModel):
    """POST /api/copy: `destination` becomes another name of `source`."""

    source: Text = Field(min_length=1)
    destination: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-/]+$")


class OllamaDeleteRequest(RequestModel):
    """DELETE /api/delete (older clients send `name`)."""

    model: Text | None = None
    name: Text | None = None


# ---- responses ------------------------------------------------------------------------------


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """A usage dict with the total filled in."""
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens).model_dump()


def new_id(prefix: str) -> str:
    """A fresh response id such as 'chatcmpl-…'."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_response(rid: str, model: str, choices: list[dict], use: dict) -> dict:
    """A non-streaming chat.completion object."""
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": use}


def chat_chunk(rid: str, model: str, created: int, choices: list[dict], with_usage: bool) -> dict:
    """One chat.completion.chunk; `usage: null` on every chunk when include_usage is on."""
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": choices}
    if with_usage:
        chunk["usage"] = None
    return chunk


def completion_response(rid: str, model: str, choices: list[dict], use: dict | None,
                        created: int | None = None) -> dict:
    """A text_completion object (streamed chunks use the same shape)."""
    out = {"id": rid, "object": "text_completion", "created": created or int(time.time()),
           "model": model, "choices": choices}
    if use is not None:
        out["usage"] = use
    return out
