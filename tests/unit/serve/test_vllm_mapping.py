"""The vLLM backend's pure mappings (vLLM itself needs CUDA and is not installed here)."""

from __future__ import annotations

from types import SimpleNamespace as Lp

from tunelab.serve.backends.base import GenParams, sampling_kwargs
from tunelab.serve.backends.vllm import _logprobs


def test_sampled_token_is_looked_up_by_id_and_top_is_by_rank():
    # vLLM returns the top-2 plus the sampled token (id 7, rank 5), in no promised order
    step = {7: Lp(logprob=-3.0, rank=5, decoded_token="x"), 3: Lp(logprob=-0.1, rank=1, decoded_token="a"),
            4: Lp(logprob=-0.9, rank=2, decoded_token="b")}
    (got,) = _logprobs([7], [step], top=2)
    assert (got.token, got.logprob) == ("x", -3.0)
    assert got.top == [("a", -0.1), ("b", -0.9)]
    assert _logprobs([3], [step], top=0)[0].top == []


def test_sampling_kwargs_keep_every_field_and_drop_stops_for_ignore_eos():
    params = GenParams(max_tokens=9, temperature=0.5, top_k=40, seed=3, stop=["\n"], logprobs=2)
    kw = sampling_kwargs(params, [1, 106])
    assert kw["stop_token_ids"] == [1, 106] and kw["max_tokens"] == 9 and kw["top_k"] == 40 and kw["seed"] == 3
    assert sampling_kwargs(GenParams(ignore_eos=True), [1, 106])["stop_token_ids"] == []
    from tunelab.engine.config import SamplingParams

    assert SamplingParams(**kw).stop == ["\n"]  # our engine takes exactly these names
