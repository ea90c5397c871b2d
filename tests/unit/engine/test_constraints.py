"""Constrained decoding on a tiny random model: output always parses, batching does not change it."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tunelab.engine import LLM, SamplingParams
from tunelab.engine.structured import StructuredOutputsParams
from tunelab.errors import InvalidRequest

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                           "unit": {"enum": ["c", "f"]},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 14}},
          "required": ["city", "unit", "days"], "additionalProperties": False}
PROMPT = [5, 40, 77, 200, 31]


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLM:
    return LLM(tiny_models["qwen2"], dtype="fp32", max_model_len=1024, block_size=4, num_blocks=1024)


def _params(seed: int, max_tokens: int = 120, **structured) -> SamplingParams:
    so = StructuredOutputsParams(**structured) if structured else None
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, structured_outputs=so)


def test_json_schema_output_validates_for_20_seeds(llm) -> None:
    outs = llm.generate([PROMPT] * 20, [_params(seed, json=SCHEMA) for seed in range(20)], use_tqdm=False)
    for out in outs:
        jsonschema.validate(json.loads(out.outputs[0].text), SCHEMA)
        assert out.outputs[0].finish_reason == "stop"
    assert len({o.outputs[0].text for o in outs}) > 1, "sampling still varies inside the grammar"


def test_mixed_batch_gives_each_request_its_output_alone(llm) -> None:
    params = [_params(1, 60, json=SCHEMA), _params(2, 20), _params(3, 20, regex=r"[a-z]{3,8}"),
              _params(4, 20, choice=["yes", "no"])]
    together = [o.outputs[0] for o in llm.generate([PROMPT] * len(params), params, use_tqdm=False)]
    alone = [llm.generate([PROMPT], p, use_tqdm=False)[0].outputs[0] for p in params]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert re.fullmatch(r"[a-z]{3,8}", together[2].text) and together[3].text in ("yes", "no")


def test_json_object_replies_that_end_parse(llm) -> None:
    outs = [o.outputs[0] for o in llm.generate([PROMPT] * 4, [_params(s, 40, json_object=True) for s in range(4)],
                                                 use_tqdm=False)]
    assert all(o.text.startswith("{") for o in outs)
    assert all(isinstance(json.loads(o.text), dict) for o in outs if o.finish_reason == "stop")


def test_greedy_constrained_and_dict_form(llm) -> None:
    params = SamplingParams(max_tokens=80, temperature=0, structured_outputs={"choice": ["alpha", "beta"]})
    assert llm.generate([PROMPT], params, use_tqdm=False)[0].outputs[0].text in ("alpha", "beta")


@pytest.mark.parametrize("fields, message", [
    ({"json": {"type": "objectx"}}, "not a valid constraint"),
    ({"json": "{not json"}, "not valid JSON"),
    ({"regex": "(unclosed"}, "not a valid constraint"),
    ({}, "exactly one"),
    ({"regex": "a", "choice": ["b"]}, "exactly one"),
])
def test_invalid_constraints_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as err:
        StructuredOutputsParams(**fields, param="response_format.json_schema.schema").check()
    assert err.value.param == "response_format.json_schema.schema"


def test_llm_chat_with_tools_returns_parsed_calls(llm) -> None:
    """LLM.chat renders the tools through the template and parses the reply in its tool format."""
    from tunelab.tools import get_format
    from tunelab.tools.grammar import tool_call_grammar

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    fmt = get_format(llm.template().tool_format)
    forced = StructuredOutputsParams(grammar=tool_call_grammar(fmt, tools, parallel=False))
    params = SamplingParams(max_tokens=150, temperature=1.0, seed=2, structured_outputs=forced)
    out = llm.chat([{"role": "user", "content": "weather?"}], params, use_tqdm=False, tools=tools)[0].outputs[0]
    (call,) = out.tool_calls
    assert call.name == "get_weather" and call.complete
    jsonschema.validate(json.loads(call.arguments), SCHEMA)
    assert llm.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2), use_tqdm=False)[0].outputs[0].tool_calls is None


def test_tokenizer_json_is_what_llguidance_hf_serializes(tiny_models) -> None:
    """The no-copy serialization equals llguidance.hf's (copy, no padding, no truncation), and a
    tokenizer with padding on is copied: the JSON has none and the tokenizer keeps its own."""
    from copy import copy

    from transformers import AutoTokenizer

    from tunelab.engine.constraints import _tokenizer_json

    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2"])
    backend = copy(tok.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    assert _tokenizer_json(tok) == backend.to_str()
    tok.backend_tokenizer.enable_padding(pad_id=0)
    assert json.loads(_tokenizer_json(tok))["padding"] is None
    assert tok.backend_tokenizer.padding is not None


def test_mask_rows_bans_exactly_the_unset_bits_on_both_paths() -> None:
    """The CPU path (keep the few allowed / set the few banned) and the torch path (taken by a
    non-contiguous tensor, as on CUDA) ban exactly the tokens whose bit is 0, in the given rows only."""
    import torch

    from tunelab.engine.constraints import _mask_rows

    vocab, gen = 1000, torch.Generator().manual_seed(0)
    allowed = torch.stack([torch.rand(vocab, generator=gen) < p for p in (0.01, 0.5, 0.99, 1.0)])  # (4, V)
    words = -(-vocab // 32)
    bits = torch.zeros(4, words * 32, dtype=torch.int64)
    bits[:, :vocab] = allowed.long()
    packed = (bits.view(4, words, 32) << torch.arange(32)).sum(-1)
    bitmask = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    rows = [0, 2, 3, 5]
    logits = torch.randn(6, vocab, generator=gen)
    expected = logits.clone()
    expected[rows] = expected[rows].masked_fill(~allowed, float("-inf"))
    cpu = logits.clone()
    _mask_rows(cpu, rows, bitmask)
    strided = logits.t().contiguous().t()
    _mask_rows(strided, rows, bitmask)
    assert torch.equal(cpu, expected) and torch.equal(strided, expected)
