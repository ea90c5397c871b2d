"""`tunelab serve --backend vllm` on real vLLM (a CUDA machine with vLLM installed), with the official
openai client: chat, logprobs, streaming and a LoRA adapter. Its CPU twin is test_serve_vllm_fake.py."""

from __future__ import annotations

import importlib.util

import openai
import pytest

from serve_util import make_lora_adapter, start_vllm_server

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_real_vllm_serves_chat_stream_logprobs_and_an_adapter(tiny_models, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA device")
    adapter = make_lora_adapter(tiny_models["qwen2"], tmp_path / "sql")
    server = start_vllm_server(tiny_models["qwen2"], adapter, "--gpu-memory-utilization", "0.3", "--max-model-len", "256",
                    "--enforce-eager", "--max-lora-rank", "8")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
        kw = dict(messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
        base = client.chat.completions.create(model="qwen2", **kw).choices[0]
        tuned = client.chat.completions.create(model="sql", **kw).choices[0]
        assert base.logprobs.content and len(base.logprobs.content[0].top_logprobs) == 2
        assert base.message.content != tuned.message.content
        chunks = list(client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=8,
                                                     temperature=0, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == base.message.content
    finally:
        server.stop()
