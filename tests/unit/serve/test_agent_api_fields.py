"""The Responses and Anthropic schemas: every field the official clients send has a decision
(served, accepted on purpose, or a 400 saying why), and the stateless refusals name their field."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from tunelab.serve.anthropic_protocol import ContentBlock, ImageSource, MessagesRequest
from tunelab.serve.errors import APIError
from tunelab.serve.responses_protocol import InputPart, ResponsesRequest
from tunelab.serve.strict import declared_fields, policies_of

CLIENT_ONLY = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}


def _client_fields(method) -> set[str]:
    return set(inspect.signature(method).parameters) - CLIENT_ONLY


def _decided(schema) -> set[str]:
    return set(declared_fields(schema)) | set(policies_of(schema))


def test_every_responses_create_field_has_a_decision():
    from openai.resources.responses import Responses

    assert _client_fields(Responses.create) - _decided(ResponsesRequest) == set()


def test_every_messages_create_field_has_a_decision():
    anthropic = pytest.importorskip("anthropic.resources.messages")
    assert _client_fields(anthropic.Messages.create) - _decided(MessagesRequest) == set()


@pytest.mark.parametrize("module, name, schema", [
    ("openai.types.responses.response_input_image_param", "ResponseInputImageParam", InputPart),
    ("anthropic.types.image_block_param", "ImageBlockParam", ContentBlock),
    ("anthropic.types.base64_image_source_param", "Base64ImageSourceParam", ImageSource),
    ("anthropic.types.url_image_source_param", "URLImageSourceParam", ImageSource),
    ("anthropic.types.file_image_source_param", "FileImageSourceParam", ImageSource),
])
def test_every_image_part_field_has_a_decision(module, name, schema):
    keys = pytest.importorskip(module).__dict__[name]  # a TypedDict
    assert set(keys.__required_keys__ | keys.__optional_keys__) - _decided(schema) == set()


def test_image_parts_become_markers_and_refs_in_order():
    png = {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    msg = MessagesRequest.model_validate({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "source": png}]},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/c.png"}}]}]})
    assert msg.chat_messages() == ([{"role": "user", "content": "a<image>"}, {"role": "assistant", "content": "b"},
                                    {"role": "user", "content": "<image>"}],
                                   [("data:image/png;base64,AAAA", "messages.0.content.1"),
                                    ("https://x/c.png", "messages.2.content.0")])
    resp = ResponsesRequest.model_validate({"model": "m", "instructions": "s", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        {"type": "input_text", "text": "c"}]}]})
    assert resp.messages() == ([{"role": "system", "content": "s"}, {"role": "user", "content": "<image>c"}],
                               [("data:image/png;base64,AAAA", "input.0.content.0")])


ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
RESPONSES_IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}


@pytest.mark.parametrize("block, param", [
    ({**ANTHROPIC_IMAGE, "source": {"type": "file", "file_id": "f"}}, "messages.0.content.0.source.file_id"),
    ({**ANTHROPIC_IMAGE, "source": {"type": "base64", "media_type": "image/tiff", "data": "A"}},
     "messages.0.content.0.source.media_type"),
    ({**ANTHROPIC_IMAGE, "transformations": {"resize": "x"}}, "messages.0.content.0.transformations"),
    ({"type": "image"}, "messages.0.content.0.source"),
    ({"type": "text", "text": "a", "source": ANTHROPIC_IMAGE["source"]}, "messages.0.content.0.source"),
    ({"type": "tool_result", "tool_use_id": "t", "content": [ANTHROPIC_IMAGE]},
     "messages.0.content.0.content.0.type"),
])
def test_anthropic_image_blocks_not_served_name_their_field(block, param):
    req = MessagesRequest.model_validate({"model": "m", "max_tokens": 1,
                                          "messages": [{"role": "user", "content": [block]}]})
    with pytest.raises(APIError) as info:
        req.chat_messages()
    assert info.value.param == param and param in info.value.message


@pytest.mark.parametrize("part, param", [
    ({**RESPONSES_IMAGE, "file_id": "file_1"}, "input.0.content.0.file_id"),
    ({**RESPONSES_IMAGE, "detail": "high"}, "input.0.content.0.detail"),
    ({"type": "input_image", "detail": "auto"}, "input.0.content.0.image_url"),
    ({"type": "input_text", "text": "a", "image_url": "data:,"}, "input.0.content.0.image_url"),
])
def test_responses_image_parts_not_served_name_their_field(part, param):
    req = ResponsesRequest.model_validate({"model": "m", "input": [{"role": "user", "content": [part]}]})
    with pytest.raises(APIError) as info:
        req.messages()
    assert info.value.param == param and param in info.value.message


def test_function_call_output_images_are_400s():
    req = ResponsesRequest.model_validate({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "c", "output": [RESPONSES_IMAGE]}]})
    with pytest.raises(APIError) as info:
        req.messages()
    assert info.value.param == "input.0.output.0.type"


@pytest.mark.parametrize("field, value", [
    ("previous_response_id", "resp_1"), ("store", True), ("truncation", "auto"),
    ("include", ["reasoning.encrypted_content"]),
])
def test_stateful_fields_are_400s_naming_them(field, value):
    with pytest.raises(ValidationError) as info:
        ResponsesRequest.model_validate({"model": "m", "input": "hi", field: value})
    assert info.value.errors()[0]["ctx"]["field"] == field


def test_off_values_and_hints_pass():
    ok = {"model": "m", "input": "hi", "store": False, "truncation": "disabled", "user": "u",
          "prompt_cache_key": "k"}
    assert ResponsesRequest.model_validate(ok).input == "hi"
    msg = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
           "metadata": {"user_id": "u"}, "service_tier": "auto"}
    assert MessagesRequest.model_validate(msg).max_tokens == 1
