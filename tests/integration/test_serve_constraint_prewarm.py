"""Serve start builds llguidance's tokenizer off the event loop, so the first constrained request
finds it built instead of paying for it (about 20 s for Gemma's 262k vocabulary on a CPU)."""

from __future__ import annotations

import json
import time

import httpx
from openai import OpenAI

from tunelab.config import build
from tunelab.engine import constraints
from tunelab.serve.app import create_app
from tunelab.serve.backends import make_backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.server import ThreadedServer

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}


def _ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(url + "/health").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


def test_first_constrained_request_finds_the_tokenizer_built(tiny_models):
    cfg = build(ServeConfig, {"model": str(tiny_models["qwen2"]), "port": 0, "access_log": False,
                              "served_name": "tiny"})
    backend = make_backend(cfg)
    server = ThreadedServer(create_app(backend, cfg), cfg).start()
    try:
        _ready(server.url)
        vocab = backend.engine.engine.model.spec.vocab_size
        assert backend.prewarm_thread is not None, "serve start did not begin building it"
        backend.prewarm_thread.join(60)
        built = constraints.cached_lltokenizer(backend.tokenizer, vocab)
        assert built is not None, "no constrained request ran yet, so only serve start can have built it"
        client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "ok?"}], max_tokens=20, seed=1,
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}})
        assert isinstance(json.loads(r.choices[0].message.content)["ok"], bool)
        assert constraints.cached_lltokenizer(backend.tokenizer, vocab) is built, "the request rebuilt it"
    finally:
        server.stop()
