"""`tunelab serve --backend vllm` end to end with the official openai client, against a test double of
the `vllm` package (tests/fakes/vllm: vLLM's public names at the boundary, recording what it is given),
so it runs on any machine; test_serve_vllm_gpu.py is the same path on real vLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from serve_util import make_lora_adapter, start_vllm_server

FAKES = Path(__file__).parents[1] / "fakes"
MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def fake_vllm():
    """The `vllm` test double importable as `vllm` for this module only."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "vllm" or name.startswith("vllm.")}
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(FAKES))
        for name in saved:
            mp.delitem(sys.modules, name)
        import vllm

        yield vllm
        for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
            del sys.modules[name]  # the double's modules; the context puts back any real ones


@pytest.fixture(scope="module")
def fake_server(fake_vllm, tiny_models, tmp_path_factory):
    adapter = make_lora_adapter(tiny_models["qwen2"], tmp_path_factory.mktemp("vllm_fake") / "sql")
    server = start_vllm_server(tiny_models["qwen2"], adapter, "--tensor-parallel-size", "4", "--dtype", "bf16",
                    "--gpu-memory-utilization", "0.5", "--max-model-len", "256", "--max-num-seqs", "8")
    yield server, fake_vllm.ENGINES[-1], adapter
    server.stop()


def test_engine_args_carry_the_tensor_parallel_and_memory_flags(fake_server, tiny_models):
    _, engine, _ = fake_server
    args = engine.args
    assert (args.model, args.tensor_parallel_size, args.dtype) == (str(tiny_models["qwen2"]), 4, "bfloat16")
    assert (args.gpu_memory_utilization, args.max_model_len, args.max_num_seqs, args.enable_lora) == (0.5, 256, 8, True)


def test_chat_request_reaches_vllm_as_prompt_ids_and_its_sampling_params(fake_server):
    server, engine, _ = fake_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    reply = client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=200, temperature=0.3,
                                           top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.25,
                                           stop=["END"], logprobs=True, top_logprobs=2)
    sent = engine.requests[-1]
    ids = sent["prompt"]["prompt_token_ids"]
    template = engine.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert ids == engine.tokenizer.encode(template, add_special_tokens=False) and sent["lora_request"] is None
    p = sent["params"]
    assert (p.max_tokens, p.temperature, p.top_p, p.seed, p.presence_penalty, p.frequency_penalty) == \
        (200, 0.3, 0.9, 7, 0.5, 0.25)
    end_of_turn = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert p.stop == ["END"] and p.logprobs == 2 and end_of_turn in p.stop_token_ids  # the template's
    choice = reply.choices[0]
    assert choice.message.content == f" {len(ids)} prompt tokens to the base model. "  # cut at the stop string
    assert choice.finish_reason == "stop"
    tokens = choice.logprobs.content
    assert tokens and all(len(t.top_logprobs) == 2 for t in tokens)
    assert [t.logprob for t in tokens[:2]] == [-2.0, -2.5]  # the sampled token's, though it ranks 3rd
    assert [t.logprob for t in tokens[0].top_logprobs] == [-0.25, -0.5]  # by rank


def test_streaming_relays_vllm_cumulative_outputs_as_deltas(fake_server):
    server, engine, _ = fake_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    stream = client.completions.create(model="qwen2", prompt="Hello", max_tokens=5, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks)
    expected = engine.tokenizer.decode(engine.tokenizer.encode(
        engine.reply(engine.requests[-1]["prompt"]["prompt_token_ids"], None), add_special_tokens=False)[:5])
    assert text == expected and len(chunks) >= 5 and chunks[-1].choices[0].finish_reason == "length"


def test_an_adapter_request_is_a_lora_request_and_json_schema_a_structured_output(fake_server):
    server, engine, adapter = fake_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    reply = client.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=200, response_format={
        "type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    sent = engine.requests[-1]
    lora = sent["lora_request"]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("sql", 1, str(adapter))
    assert sent["params"].structured_outputs.json == schema
    assert "to the sql model" in reply.choices[0].message.content
