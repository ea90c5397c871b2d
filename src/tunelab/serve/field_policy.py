"""The one table of request fields tunelab knows of but does not serve, by schema class name.

A field a schema declares is served. A field listed here is either `accepted` on purpose (it
cannot change the output: billing, caching, placement; dropped at the edge) or `rejected` with a
400 that names it and says why (any value but a "not used" one: null, empty, or one listed as a
no-op). Any other field is a 400 "unsupported field" with the closest known name.

Implementing a field = declaring it on the schema and deleting its line here (a test fails while
a declared field is still listed). Entries apply to subclasses too (SamplingFields: both OpenAI
generation routes). The agent APIs' items and parts (responses_protocol.ItemModel: InputPart,
ContentBlock, ImageSource) check their undeclared keys against this table too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_EMPTY: tuple[Any, ...] = (None, [], {}, "")  # JSON's ways of saying "not used"


@dataclass(frozen=True)
class Policy:
    """What tunelab does with one undeclared field."""

    why: str  # shown in the 400, or the reason it is safe to accept
    accepted: bool = False  # True: any value is fine (has no effect on the output)
    noop: tuple[Any, ...] = ()  # values meaning "off", accepted even when the field is rejected

    def allows(self, value: Any) -> bool:
        """Whether `value` may pass: always when accepted, else only a "not used" value."""
        return self.accepted or unused(value) or any(
            value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.noop)  # False is no 0


def unused(value: Any) -> bool:
    """Whether `value` is one of JSON's ways of saying "not used": null, [], {} or ""."""
    return any(value == v for v in _EMPTY)


def accepted(why: str) -> Policy:
    """A field taken on purpose and dropped: `why` says why it cannot change the output."""
    return Policy(why, accepted=True)


def rejected(why: str, *noop: Any) -> Policy:
    """A field that is a 400 (saying `why`) unless null, empty or one of `noop`."""
    return Policy(why, noop=noop)


NOT_YET = "not implemented by tunelab yet"
TEXT_ONLY = "this model serves text only"
TOOLS = "OpenAI's legacy function calling; send `tools` and `tool_choice`"
CACHE_HINT = "a prompt-cache hint; caching never changes the output"
STATELESS = "tunelab's Responses API is stateless: send the whole conversation in `input`"

_OLLAMA_REQUEST = {  # /api/chat and /api/generate alike
    "logprobs": rejected(NOT_YET, False),
    "top_logprobs": rejected(NOT_YET, 0),
}

TABLE: dict[str, dict[str, Policy]] = {
    "SamplingFields": {  # /v1/chat/completions and /v1/completions
        "logit_bias": rejected(NOT_YET),
        "metadata": accepted("tags for OpenAI's stored-completions dashboard; nothing is stored"),
        "service_tier": accepted("OpenAI's billing and latency tier; one local tier, same output"),
        "safety_identifier": accepted("an end-user id for abuse monitoring, like `user`"),
        "prompt_cache_key": accepted(CACHE_HINT),
        "prompt_cache_retention": accepted(CACHE_HINT),
    },
    "ChatCompletionRequest": {
        "functions": rejected(TOOLS),
        "function_call": rejected(TOOLS, "none"),
        "modalities": rejected(TEXT_ONLY, ["text"]),
        "audio": rejected(TEXT_ONLY),
        "store": rejected("tunelab stores no completions", False),
        "prediction": rejected(NOT_YET),
        "reasoning_effort": rejected("use chat_template_kwargs, e.g. {\"enable_thinking\": false}"),
        "verbosity": rejected(NOT_YET),
        "web_search_options": rejected("tunelab has no web search"),
        "moderation": rejected("tunelab runs no moderation"),
        "prompt_cache_options": accepted(CACHE_HINT),
    },
    "CompletionRequest": {"best_of": rejected(NOT_YET, 1)},
    "ChatMessage": {
        "function_call": rejected(TOOLS),
        "refusal": rejected(NOT_YET),
        "audio": rejected(TEXT_ONLY),
    },
    "ContentPart": {"prompt_cache_breakpoint": accepted(CACHE_HINT)},
    "StreamOptions": {"include_obfuscation": accepted("OpenAI's random padding of stream events "
                                                      "against side channels; the text is the same")},
    "OllamaChatRequest": _OLLAMA_REQUEST,
    "OllamaGenerateRequest": {
        **_OLLAMA_REQUEST,
        "suffix": rejected(NOT_YET),
        "template": rejected("the model's own chat template is used; set `raw` to send a prompt as is"),
        "context": rejected("send the conversation as text (Ollama deprecated `context`)"),
        "width": rejected("image generation is not served"),
        "height": rejected("image generation is not served"),
        "steps": rejected("image generation is not served"),
    },
    "OllamaOptions": {
        # resources only: where and how the one loaded model runs, never what it says
        **{name: accepted("resources only (placement, threads, memory); same output")
           for name in ("num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock",
                        "numa", "low_vram", "f16_kv")},
        "num_ctx": accepted("the served context window is fixed; a prompt that does not fit is a 400, "
                            "never truncated"),
        "num_keep": accepted("only used when Ollama shifts an overflowing context; tunelab never does"),
        "mirostat_tau": accepted("only used with mirostat, which is a 400 when on"),
        "mirostat_eta": accepted("only used with mirostat, which is a 400 when on"),
        "mirostat": rejected(NOT_YET, 0),
        "tfs_z": rejected(NOT_YET, 1.0),
        "typical_p": rejected(NOT_YET, 1.0),
        "repeat_last_n": rejected("a window of the last N tokens for repeat_penalty is not "
                                  "implemented yet"),
        "penalize_newline": rejected("newlines are penalized like any token", True),
        "vocab_only": rejected(NOT_YET, False),
        "logits_all": rejected(NOT_YET, False),
        "embedding_only": rejected("use /api/embed", False),
    },
    "LoraLoadRequest": {"load_inplace": rejected("unload the adapter first, then load it", False)},
    "OllamaShowRequest": {"verbose": rejected(NOT_YET, False)},
    "OllamaPullRequest": {"insecure": accepted("TLS to a registry; tunelab pulls through its own sources")},
    "OllamaCreateRequest": {
        "quantize": rejected("quantize on export (`tunelab export --quant`)"),
        "messages": rejected("created models carry no conversation"),
        "license": rejected("licenses are not stored"),
    },
    "ResponsesRequest": {  # /v1/responses is stateless and serves function tools only
        "previous_response_id": rejected(STATELESS),
        "conversation": rejected(STATELESS),
        "store": rejected("tunelab stores no responses", False),
        "background": rejected("background responses are not served", False),
        "background_options": rejected("background responses are not served"),
        "include": rejected("no optional output data (logprobs, encrypted reasoning) is served yet"),
        "truncation": rejected("a prompt that does not fit is a 400, never cut", "disabled"),
        "top_logprobs": rejected(NOT_YET, 0),
        "prompt": rejected("stored prompt templates are not served"),
        "context_management": rejected(NOT_YET),
        "moderation": rejected("tunelab runs no moderation"),
        "image": rejected("image generation is not served"),
        "access_programs": rejected(NOT_YET),
        "user": accepted("an end-user id for abuse monitoring"),
        "safety_identifier": accepted("an end-user id for abuse monitoring"),
        "service_tier": accepted("OpenAI's billing and latency tier; one local tier, same output"),
        "prompt_cache_key": accepted(CACHE_HINT),
        "prompt_cache_retention": accepted(CACHE_HINT),
        "prompt_cache_options": accepted(CACHE_HINT),
        "stream_options": accepted("stream obfuscation padding; the events are the same"),
    },
    "InputPart": {  # /v1/responses message content parts
        "file_id": rejected("there is no Files API: send the image as a base64 data URL in image_url"),
        "prompt_cache_breakpoint": accepted(CACHE_HINT),
    },
    "TextConfig": {"verbosity": rejected(NOT_YET)},
    "MessagesRequest": {  # /v1/messages (and count_tokens)
        "mcp_servers": rejected("MCP servers are not served"),
        "container": rejected("code execution containers are not served"),
        "metadata": accepted("user_id for abuse monitoring"),
        "service_tier": accepted("Anthropic's billing tier; one local tier, same output"),
        "speed": accepted("a latency tier; one local tier, same output"),
        "inference_geo": accepted("where the request runs: here"),
        "cache_control": accepted(CACHE_HINT),
        "diagnostics": accepted("request diagnostics; the output is the same"),
        "user_profile_id": accepted("an account id; the output is the same"),
        "workspace_id": accepted("an account id; the output is the same"),
    },
    "ContentBlock": {  # /v1/messages content blocks
        "transformations": rejected("images are resized the way the model's processor does"),
    },
    "ImageSource": {"file_id": rejected("there is no Files API: send the image as base64 data")},
}
