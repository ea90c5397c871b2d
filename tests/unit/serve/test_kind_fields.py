"""A part, block or message carries only its own kind's fields (strict.Kinds): a field of another kind
(a text block's `source`, an image's `text`, a user turn's `tool_calls`) is a 400 naming the field and
the kind, on every API; null or empty means "not used" and passes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunelab.serve.anthropic_protocol import ContentBlock, ImageSource, MessagesRequest
from tunelab.serve.errors import APIError
from tunelab.serve.protocol import ChatCompletionRequest, ChatMessage, ContentPart, OllamaChatRequest, OllamaMessage
from tunelab.serve.responses_protocol import InputItem, InputPart, ResponsesRequest
from tunelab.serve.strict import declared_fields

SCHEMAS = [ContentPart, ChatMessage, OllamaMessage, ContentBlock, ImageSource, InputPart, InputItem]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_every_declared_field_belongs_to_a_kind(schema):
    kinds = schema.KINDS
    owned = set(kinds.common).union(*kinds.own.values())
    assert declared_fields(schema) - {kinds.key} == owned
    assert all(not (kinds.common & fields) for fields in kinds.own.values())


# (module, TypedDict, schema, kind): what the official client may send on that kind must be carried by it
CLIENT_KINDS = [
    ("openai.types.chat.chat_completion_content_part_text_param", "ChatCompletionContentPartTextParam",
     ContentPart, "text"),
    ("openai.types.chat.chat_completion_content_part_image_param", "ChatCompletionContentPartImageParam",
     ContentPart, "image_url"),
    ("openai.types.chat.chat_completion_system_message_param", "ChatCompletionSystemMessageParam",
     ChatMessage, "system"),
    ("openai.types.chat.chat_completion_developer_message_param", "ChatCompletionDeveloperMessageParam",
     ChatMessage, "developer"),
    ("openai.types.chat.chat_completion_user_message_param", "ChatCompletionUserMessageParam", ChatMessage, "user"),
    ("openai.types.chat.chat_completion_assistant_message_param", "ChatCompletionAssistantMessageParam",
     ChatMessage, "assistant"),
    ("openai.types.chat.chat_completion_tool_message_param", "ChatCompletionToolMessageParam", ChatMessage, "tool"),
    ("openai.types.responses.response_input_text_param", "ResponseInputTextParam", InputPart, "input_text"),
    ("openai.types.responses.response_output_text_param", "ResponseOutputTextParam", InputPart, "output_text"),
    ("openai.types.responses.response_input_image_param", "ResponseInputImageParam", InputPart, "input_image"),
    ("openai.types.responses.easy_input_message_param", "EasyInputMessageParam", InputItem, "message"),
    ("openai.types.responses.response_output_message_param", "ResponseOutputMessageParam", InputItem, "message"),
    ("openai.types.responses.response_reasoning_item_param", "ResponseReasoningItemParam", InputItem, "reasoning"),
    ("openai.types.responses.response_function_tool_call_param", "ResponseFunctionToolCallParam",
     InputItem, "function_call"),
    ("openai.types.responses.response_input_item_param", "FunctionCallOutput", InputItem, "function_call_output"),
    ("anthropic.types.text_block_param", "TextBlockParam", ContentBlock, "text"),
    ("anthropic.types.image_block_param", "ImageBlockParam", ContentBlock, "image"),
    ("anthropic.types.thinking_block_param", "ThinkingBlockParam", ContentBlock, "thinking"),
    ("anthropic.types.redacted_thinking_block_param", "RedactedThinkingBlockParam", ContentBlock,
     "redacted_thinking"),
    ("anthropic.types.tool_use_block_param", "ToolUseBlockParam", ContentBlock, "tool_use"),
    ("anthropic.types.tool_result_block_param", "ToolResultBlockParam", ContentBlock, "tool_result"),
    ("anthropic.types.base64_image_source_param", "Base64ImageSourceParam", ImageSource, "base64"),
    ("anthropic.types.url_image_source_param", "URLImageSourceParam", ImageSource, "url"),
]


@pytest.mark.parametrize("module, name, schema, kind", CLIENT_KINDS, ids=[c[1] for c in CLIENT_KINDS])
def test_the_clients_fields_of_each_kind_are_carried_by_it(module, name, schema, kind):
    params = getattr(pytest.importorskip(module), name)  # a TypedDict
    keys = set(params.__required_keys__ | params.__optional_keys__) & declared_fields(schema)
    kinds = schema.KINDS
    assert keys - {kinds.key} - kinds.common - kinds.own[kind] == set()


def _chat_error(messages: list[dict], schema=ChatCompletionRequest) -> dict:
    with pytest.raises(ValidationError) as info:
        schema.model_validate({"model": "m", "messages": messages})
    return next(e for e in info.value.errors() if e["type"] == "unsupported_field")  # of a union's branches


@pytest.mark.parametrize("part, field, kind", [
    ({"type": "text", "text": "hi", "image_url": {"url": "data:,"}}, "image_url", "text"),
    ({"type": "image_url", "image_url": {"url": "data:,"}, "text": "hi"}, "text", "image_url"),
])
def test_openai_chat_part_of_another_kind_is_named(part, field, kind):
    err = _chat_error([{"role": "user", "content": [part]}])
    assert err["ctx"]["field"] == field and f"'{kind}' part has no {field}" in err["msg"]


@pytest.mark.parametrize("message, field", [
    ({"role": "user", "content": "x", "tool_calls": [{"id": "c", "type": "function",
                                                      "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls"),
    ({"role": "user", "content": "x", "tool_call_id": "c"}, "tool_call_id"),
    ({"role": "system", "content": "x", "reasoning_content": "hm"}, "reasoning_content"),
    ({"role": "assistant", "content": "x", "tool_call_id": "c"}, "tool_call_id"),
])
def test_openai_message_field_of_another_role_is_named(message, field):
    err = _chat_error([message])
    assert err["ctx"]["field"] == field and f"'{message['role']}' message has no {field}" in err["msg"]


@pytest.mark.parametrize("message, field", [
    ({"role": "user", "content": "x", "thinking": "hm"}, "thinking"),
    ({"role": "user", "content": "x", "tool_name": "f"}, "tool_name"),
    ({"role": "tool", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "tool_calls"),
])
def test_ollama_message_field_of_another_role_is_named(message, field):
    err = _chat_error([message], OllamaChatRequest)
    assert err["ctx"]["field"] == field and f"'{message['role']}' message has no {field}" in err["msg"]


def test_not_used_values_and_own_fields_pass():
    ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a", "image_url": None}], "tool_calls": []},
        {"role": "assistant", "content": None, "reasoning_content": "hm", "tool_call_id": None},
        {"role": "tool", "content": "r", "tool_call_id": "c", "name": "f"}]})
    OllamaChatRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "x", "images": [], "thinking": ""},
        {"role": "assistant", "content": "", "thinking": "hm"}, {"role": "tool", "content": "r", "tool_name": "f"}]})


PNG = {"type": "base64", "media_type": "image/png", "data": "AAAA"}


@pytest.mark.parametrize("block, param, kind", [
    ({"type": "image", "source": PNG, "text": "hi"}, "messages.0.content.0.text", "image"),
    ({"type": "text", "text": "a", "input": {"x": 1}}, "messages.0.content.0.input", "text"),
    ({"type": "thinking", "thinking": "hm", "signature": "s", "text": "x"}, "messages.0.content.0.text", "thinking"),
    ({"type": "tool_use", "id": "t", "name": "f", "input": {}, "text": "x"}, "messages.0.content.0.text", "tool_use"),
    ({"type": "tool_result", "tool_use_id": "t", "content": "r", "source": PNG}, "messages.0.content.0.source",
     "tool_result"),
    ({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r", "is_error": True}]},
     "messages.0.content.0.content.0.is_error", "text"),
    ({"type": "image", "source": {**PNG, "url": "https://x/a.png"}}, "messages.0.content.0.source.url", "base64"),
    ({"type": "image", "source": {"type": "url", "url": "https://x/a.png", "data": "AA"}},
     "messages.0.content.0.source.data", "url"),
])
def test_anthropic_block_field_of_another_kind_is_named(block, param, kind):
    req = MessagesRequest.model_validate({"model": "m", "max_tokens": 1,
                                          "messages": [{"role": "user", "content": [block]}]})
    with pytest.raises(APIError) as info:
        req.chat_messages()
    assert info.value.param == param and f"'{param}'" in info.value.message
    assert f"a '{kind}' " in info.value.message


@pytest.mark.parametrize("item, param, kind", [
    ({"role": "user", "content": [{"type": "input_text", "text": "a", "annotations": []}],
      "call_id": "c"}, "input.0.call_id", "message"),
    ({"role": "user", "content": [{"type": "input_text", "text": "a", "image_url": "data:,"}]},
     "input.0.content.0.image_url", "input_text"),
    ({"role": "user", "content": [{"type": "input_text", "text": "a", "logprobs": [{"token": "a"}]}]},
     "input.0.content.0.logprobs", "input_text"),
    ({"role": "user", "content": [{"type": "input_image", "image_url": "data:,", "text": "a"}]},
     "input.0.content.0.text", "input_image"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "output": "r"},
     "input.0.output", "function_call"),
    ({"type": "function_call_output", "call_id": "c", "output": "r", "role": "user"}, "input.0.role",
     "function_call_output"),
])
def test_responses_part_or_item_field_of_another_kind_is_named(item, param, kind):
    req = ResponsesRequest.model_validate({"model": "m", "input": [item]})
    with pytest.raises(APIError) as info:
        req.messages()
    assert info.value.param == param and f"'{param}'" in info.value.message
    assert f"a '{kind}' " in info.value.message


def test_a_function_call_outputs_name_names_the_tool_turn():
    req = ResponsesRequest.model_validate({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "c", "output": "r", "name": "lookup"}]})
    assert req.messages()[0][-1] == {"role": "tool", "tool_call_id": "c", "name": "lookup", "content": "r"}
