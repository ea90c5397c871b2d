"""`tunelab serve` with vLLM's flags and routes, driven by the official `openai` client.

Tutorial 001 starts `python -m vllm.entrypoints.openai.api_server --model ./merged-llama2-industry
--host 0.0.0.0 --port 8000 --gpu-memory-utilization 0.9` and its client sends
`model="./merged-llama2-industry"`; the same flags and client code work against tunelab.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from serve_util import make_lora_adapter
from tunelab.cli import parse
from tunelab.commands.serve import build_config
from tunelab.errors import ConfigError
from tunelab.serve.app import create_app
from tunelab.serve.backends import make_backend
from tunelab.serve.server import ThreadedServer

MESSAGES = [{"role": "system", "content": "你是一个专业的行业技术顾问。"},
            {"role": "user", "content": "如果遇到显存 OOM 错误,我该如何在微调时调整参数?"}]


def _config(*argv: str):
    return build_config(parse(["serve", *argv]))


def test_vllm_flags_map_onto_serve_config():
    cfg = _config("--model", "./merged", "--host", "0.0.0.0", "--port", "8001", "--gpu-memory-utilization", "0.8",
                  "--served-model-name", "industry", "--max-model-len", "512", "--enable-lora",
                  "--lora-modules", "sql=runs/sql", '{"name": "law", "path": "runs/law"}', "--api-key", "k",
                  "--dtype", "half", "--trust-remote-code", "--tensor-parallel-size", "1")
    assert (cfg.model, cfg.host, cfg.port, cfg.served_name, cfg.api_key) == ("./merged", "0.0.0.0", 8001,
                                                                             "industry", "k")
    e = cfg.engine
    assert (e.gpu_memory_utilization, e.max_model_len, e.dtype, e.trust_remote_code) == (0.8, 512, "half", True)
    assert cfg.adapters == {"sql": "runs/sql", "law": "runs/law"}


def test_vllm_flags_reach_the_vllm_backend():
    from tunelab.serve.backends.vllm import engine_args

    args = engine_args(_config("--tensor-parallel-size", "2", "--dtype", "bf16", "--trust-remote-code").engine)
    assert (args["tensor_parallel_size"], args["dtype"], args["trust_remote_code"]) == (2, "bfloat16", True)


def test_bad_lora_module_is_named():
    with pytest.raises(ConfigError, match="--lora-modules: expected NAME=PATH"):
        _config("--lora-modules", "justaname")


def test_tensor_parallel_on_the_engine_backend_points_at_vllm(tiny_models):
    from tunelab.engine.engine import LLMEngine

    with pytest.raises(ConfigError, match="--backend vllm --tensor-parallel-size 2"):
        LLMEngine(tiny_models["qwen2"], config=_config("--tensor-parallel-size", "2").engine)


@pytest.fixture(scope="module")
def tutorial_server(tiny_models, tmp_path_factory):
    """The tutorial's command line, the model given as the relative path ./merged-llama2-industry."""
    import os

    root = tmp_path_factory.mktemp("vllm_serve")
    (root / "merged-llama2-industry").symlink_to(tiny_models["qwen2"])
    adapter = make_lora_adapter(tiny_models["qwen2"], root / "sql-adapter")
    old = os.getcwd()
    os.chdir(root)
    try:
        cfg = _config("--model", "./merged-llama2-industry", "--host", "127.0.0.1", "--port", "0",
                      "--gpu-memory-utilization", "0.9", "--max-model-len", "256", "--dtype", "float32",
                      "--api-key", "EMPTY", "--enable-lora", "--access-log", "false")
        server = ThreadedServer(create_app(make_backend(cfg), cfg), cfg).start()
        _wait_ready(server.url)
        yield server, adapter
    finally:
        os.chdir(old)
    server.stop()


def test_client_names_the_model_by_its_path_and_streams(tutorial_server):
    server, _ = tutorial_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY")
    completion = client.chat.completions.create(model="./merged-llama2-industry", messages=MESSAGES,
                                                temperature=0.7, max_tokens=8, stream=True)
    chunks = [c for c in completion]
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert client.models.list().data[0].id == "merged-llama2-industry"


def test_vllm_load_and_unload_lora_adapter_routes(tutorial_server):
    server, adapter = tutorial_server
    headers = {"Authorization": "Bearer EMPTY"}
    r = httpx.post(server.url + "/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(adapter)},
                   headers=headers)
    assert r.status_code == 200 and "sql" in r.text, r.text
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY")
    assert "sql" in [m.id for m in client.models.list().data]
    kw = dict(messages=MESSAGES[1:], temperature=0, max_tokens=6)
    tuned = client.chat.completions.create(model="sql", **kw).choices[0].message.content
    base = client.chat.completions.create(model="./merged-llama2-industry", **kw).choices[0].message.content
    assert tuned != base
    r = httpx.post(server.url + "/v1/unload_lora_adapter", json={"lora_name": "sql"}, headers=headers)
    assert r.status_code == 200, r.text
    assert "sql" not in [m.id for m in client.models.list().data]
    r = httpx.post(server.url + "/v1/unload_lora_adapter", json={"lora_name": "sql"}, headers=headers)
    assert r.status_code == 404


def _wait_ready(url: str) -> None:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if httpx.get(url + "/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready")
