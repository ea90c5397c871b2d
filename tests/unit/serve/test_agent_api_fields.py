"""The Responses and Anthropic schemas: every field the official clients send has a decision
(served, accepted on purpose, or a 400 saying why), and the stateless refusals name their field."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from tunelab.serve.anthropic_protocol import MessagesRequest
from tunelab.serve.responses_protocol import ResponsesRequest
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
