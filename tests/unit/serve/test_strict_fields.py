"""Every request field is served, accepted on purpose, or a 400 naming it; the official clients'
field lists each have a decision, and the one table never lists a field a schema now declares."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from pydantic import ValidationError

import tunelab.serve
from tunelab.serve import protocol as P
from tunelab.serve.embeddings_protocol import EmbeddingRequest, OllamaEmbedRequest
from tunelab.serve.field_policy import TABLE, accepted, rejected
from tunelab.serve.strict import RequestModel, declared_fields, policies_of

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _schemas() -> dict[str, type[RequestModel]]:
    """Every RequestModel (and agent-API item, ItemModel) subclass in tunelab.serve, by class name."""
    from tunelab.serve.responses_protocol import ItemModel

    for mod in pkgutil.iter_modules(tunelab.serve.__path__):
        importlib.import_module(f"tunelab.serve.{mod.name}")
    found, todo = {}, [RequestModel, ItemModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub.__name__] = sub
            todo.append(sub)
    return found


def _decided(schema: type[RequestModel]) -> set[str]:
    return set(declared_fields(schema)) | set(policies_of(schema))


def test_the_table_names_real_schemas_and_no_declared_field():
    schemas = _schemas()
    for name, entries in TABLE.items():
        assert name in schemas, f"field_policy.TABLE names no schema {name!r}"
        both = set(entries) & set(schemas[name].model_fields)
        assert not both, f"{name} declares {both}: delete their lines from field_policy.TABLE"


def _typed_dict_keys(module: str, name: str) -> set[str]:
    cls = getattr(importlib.import_module(module), name)  # a TypedDict
    return set(cls.__required_keys__ | cls.__optional_keys__)


@pytest.mark.parametrize("module, name, schema", [
    ("openai.types.chat.completion_create_params", "CompletionCreateParamsBase", P.ChatCompletionRequest),
    ("openai.types.completion_create_params", "CompletionCreateParamsBase", P.CompletionRequest),
    ("openai.types.chat.chat_completion_stream_options_param", "ChatCompletionStreamOptionsParam",
     P.StreamOptions),
    ("openai.types.chat.chat_completion_content_part_text_param", "ChatCompletionContentPartTextParam",
     P.ContentPart),
    ("openai.types.embedding_create_params", "EmbeddingCreateParams", EmbeddingRequest),
    *[(f"openai.types.chat.chat_completion_{role}_message_param",
       f"ChatCompletion{role.title()}MessageParam", P.ChatMessage)
      for role in ("system", "developer", "user", "assistant", "tool")],
])
def test_every_openai_field_has_a_decision(module, name, schema):
    assert _typed_dict_keys(module, name) - _decided(schema) == set()


@pytest.mark.parametrize("name, schema", [
    ("ChatRequest", P.OllamaChatRequest), ("GenerateRequest", P.OllamaGenerateRequest),
    ("Options", P.OllamaOptions), ("Message", P.OllamaMessage), ("EmbedRequest", OllamaEmbedRequest),
])
def test_every_ollama_client_field_has_a_decision(name, schema):
    import ollama._types as T

    assert set(getattr(T, name).model_fields) - _decided(schema) == set()


def _error(schema: type[RequestModel], body: dict) -> dict:
    with pytest.raises(ValidationError) as info:
        schema.model_validate(body)
    return info.value.errors()[0]


def test_unknown_field_is_named_with_the_closest_known_one():
    err = _error(P.ChatCompletionRequest, {**CHAT, "top_kk": 5})
    assert err["type"] == "unsupported_field" and err["ctx"]["field"] == "top_kk"
    assert "did you mean 'top_k'?" in err["msg"]
    assert "did you mean" not in _error(P.CompletionRequest, {"model": "m", "prompt": "x", "zzz": 1})["msg"]


def test_rejected_field_says_why_unless_its_value_means_off():
    assert "text only" in _error(P.ChatCompletionRequest, {**CHAT, "audio": {"voice": "alloy"}})["msg"]
    off = {"logit_bias": {}, "modalities": ["text"], "store": False, "audio": None, "prediction": None}
    assert P.ChatCompletionRequest.model_validate({**CHAT, **off}).model_dump(exclude_defaults=True) == CHAT


def test_accepted_fields_are_dropped_on_purpose():
    req = P.ChatCompletionRequest.model_validate({**CHAT, "metadata": {"a": "b"}, "service_tier": "flex"})
    assert req == P.ChatCompletionRequest.model_validate(CHAT)


def test_a_part_neither_text_nor_image_names_its_type():
    parts = [{"type": "text", "text": "a"}, {"type": "input_audio", "input_audio": {"data": "x"}}]
    with pytest.raises(ValidationError) as info:  # a union: the list branch's error is the one
        P.ChatMessage.model_validate({"role": "user", "content": parts})
    err = next(e for e in info.value.errors() if e["type"] == "unsupported_value")
    assert err["loc"][-1] == 1 and err["ctx"]["field"] == "type" and "'input_audio'" in err["msg"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}
    with pytest.raises(ValidationError, match="detail"):  # would change what the model sees
        P.ChatMessage.model_validate({"role": "user", "content": [image]})


def test_ollama_options_resources_pass_output_changing_ones_do_not():
    resources = {"num_thread": 4, "num_ctx": 8192, "mirostat": 0}
    assert P.OllamaOptions.model_validate(resources) == P.OllamaOptions()
    assert _error(P.OllamaOptions, {"mirostat": 2})["ctx"]["field"] == "mirostat"


def test_false_is_not_zero_and_true_is_not_one():
    assert rejected("x", 0).allows(0) and not rejected("x", 0).allows(False)
    assert rejected("x", True).allows(True) and not rejected("x", True).allows(1)
    assert accepted("x").allows({"anything": 1}) and not rejected("x").allows(3)


def test_declared_message_fields_reach_the_template():
    from tunelab.serve.openai_routes import chat_messages

    turns = [P.ChatMessage(role="user", content="hi", name="ann"),
             P.ChatMessage(role="assistant", content="yo", reasoning_content="mm")]
    assert chat_messages(turns) == [{"role": "user", "content": "hi", "name": "ann"},
                                    {"role": "assistant", "content": "yo", "reasoning_content": "mm"}]
