"""The vLLM backend's pure mappings (vLLM itself needs CUDA and is not installed here)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace as Lp

from tunelab.engine.config import SamplingParams
from tunelab.serve.backends.vllm import TUNELAB_ONLY, _logprobs, vllm_kwargs

# keyword arguments of vllm.SamplingParams (vLLM 0.x), for the fields we send
VLLM_NAMES = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
              "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "logprobs",
              "prompt_logprobs", "structured_outputs"}


def test_sampled_token_is_looked_up_by_id_and_top_is_by_rank():
    # vLLM returns the top-2 plus the sampled token (id 7, rank 5), in no promised order
    step = {7: Lp(logprob=-3.0, rank=5, decoded_token="x"), 3: Lp(logprob=-0.1, rank=1, decoded_token="a"),
            4: Lp(logprob=-0.9, rank=2, decoded_token="b")}
    (got,) = _logprobs([7], [step], top=2)
    assert (got.token_id, got.token, got.logprob) == (7, "x", -3.0)
    assert got.top == [(3, -0.1), (4, -0.9)] and got.top_text() == [("a", -0.1), ("b", -0.9)]
    assert _logprobs([3], [step], top=0)[0].top == []


def test_every_sampling_field_reaches_vllm_under_its_name():
    params = SamplingParams(max_tokens=9, temperature=0.5, top_k=40, seed=3, stop=["\n"], logprobs=2)
    kw = vllm_kwargs(params.stopping_at([1, 106]))
    assert set(kw) <= VLLM_NAMES, f"map these fields for vLLM: {set(kw) - VLLM_NAMES}"
    assert kw["stop_token_ids"] == [1, 106] and kw["max_tokens"] == 9 and kw["top_k"] == 40 and kw["seed"] == 3
    assert set(kw) == {f.name for f in dataclasses.fields(SamplingParams)} - set(TUNELAB_ONLY)


def test_ignore_eos_keeps_the_requests_stop_ids_but_not_the_templates():
    params = SamplingParams(ignore_eos=True, stop_token_ids=[5])
    assert params.stopping_at([1, 106]).stop_token_ids == [5]
    assert SamplingParams(stop_token_ids=[5, 1]).stopping_at([1, 106]).stop_token_ids == [5, 1, 106]
