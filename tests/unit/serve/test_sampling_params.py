"""HTTP schemas -> the engine's SamplingParams, mapped once at the edge (OpenAI and Ollama)."""

from __future__ import annotations

import dataclasses

import pytest

from tunelab.engine.config import SamplingParams
from tunelab.errors import InvalidRequest
from tunelab.serve import protocol as P

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_openai_chat_copies_every_knob_and_maps_logprobs():
    req = P.ChatCompletionRequest(**CHAT, temperature=0.3, top_p=0.9, top_k=0, min_p=0.05, seed=7,
                                  repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=-0.5,
                                  stop="###", n=3, ignore_eos=True, logprobs=True, top_logprobs=4)
    assert req.to_sampling_params(12) == SamplingParams(
        max_tokens=12, temperature=0.3, top_p=0.9, top_k=-1, min_p=0.05, seed=7, repetition_penalty=1.1,
        presence_penalty=0.5, frequency_penalty=-0.5, stop=["###"], n=3, ignore_eos=True, logprobs=4)


def test_openai_defaults_are_the_engines_and_chat_logprobs_is_a_switch():
    params = P.ChatCompletionRequest(**CHAT).to_sampling_params(5)
    assert params == SamplingParams(max_tokens=5)
    assert P.ChatCompletionRequest(**CHAT, logprobs=True).to_sampling_params(5).logprobs == 0
    assert P.ChatCompletionRequest(**CHAT, top_logprobs=3).to_sampling_params(5).logprobs is None


def test_openai_completion_logprobs_is_the_count():
    req = P.CompletionRequest(model="m", prompt="x", logprobs=2, stop=["a", "b"])
    assert (req.to_sampling_params(4).logprobs, req.to_sampling_params(4).stop) == (2, ["a", "b"])


def test_ollama_options_are_renamed_and_keep_ollamas_temperature():
    opts = P.OllamaOptions(repeat_penalty=1.2, num_predict=99, top_k=40, stop=["\n"], seed=1)
    params = opts.to_sampling_params(10)
    assert (params.repetition_penalty, params.max_tokens, params.top_k, params.stop, params.seed) == (
        1.2, 10, 40, ["\n"], 1)
    assert params.temperature == 0.8  # Ollama's default, not ours
    assert P.OllamaOptions(temperature=0).to_sampling_params(1).greedy


def test_ollama_value_out_of_the_engines_range_names_the_option():
    with pytest.raises(InvalidRequest) as err:
        P.OllamaOptions(presence_penalty=5).to_sampling_params(10)
    assert err.value.param == "options.presence_penalty"
    assert str(err.value) == "options.presence_penalty must be in [-2, 2], got 5.0"
    with pytest.raises(InvalidRequest) as err:
        P.OllamaOptions(top_k=-3).to_sampling_params(10)
    assert err.value.param == "options.top_k"


def test_a_field_named_like_a_sampling_field_flows_through_without_mapping_code():
    class Extended(P.CompletionRequest):  # what a new option (say in #16) would look like
        stop_token_ids: list[int] | None = None

    assert "stop_token_ids" in {f.name for f in dataclasses.fields(SamplingParams)}
    req = Extended(model="m", prompt="x", stop_token_ids=[42])
    assert req.to_sampling_params(3).stop_token_ids == [42]


def test_a_models_defaults_fill_what_the_request_did_not_send_on_every_api():
    """Modelfile PARAMETERs (Ollama names) become engine defaults; a value the request sends wins,
    even one equal to the schema's default (temperature 1.0 on OpenAI)."""
    from tunelab.serve.anthropic_protocol import MessagesRequest
    from tunelab.serve.responses_protocol import ResponsesRequest

    defaults = P.OllamaOptions(temperature=0.2, seed=5, repeat_penalty=1.3, num_predict=-1).engine_defaults()
    assert defaults == {"temperature": 0.2, "seed": 5, "repetition_penalty": 1.3}
    chat = P.ChatCompletionRequest(**CHAT).to_sampling_params(9, None, defaults)
    assert (chat.temperature, chat.seed, chat.repetition_penalty, chat.max_tokens) == (0.2, 5, 1.3, 9)
    assert P.ChatCompletionRequest(**CHAT, temperature=1.0).to_sampling_params(9, None, defaults).temperature == 1.0
    assert P.OllamaOptions(seed=1).to_sampling_params(9, None, defaults).seed == 1
    assert P.OllamaOptions().to_sampling_params(9, None, defaults).temperature == 0.2  # over Ollama's 0.8
    responses = ResponsesRequest(model="m", input="hi", top_p=0.5).to_sampling_params(9, None, defaults)
    assert (responses.temperature, responses.top_p, responses.seed) == (0.2, 0.5, 5)
    anthropic = MessagesRequest(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert anthropic.to_sampling_params(4, None, defaults).repetition_penalty == 1.3
