"""llguidance's tokenizer (seconds of CPU for Gemma's 262k vocabulary, holding the GIL) is built by
the first constrained request, not at serve start: a server that never gets one never pays for it,
and every later constrained request reuses the one built."""

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


def _ask(client: OpenAI, **extra) -> str:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ok?"}],
                                       max_tokens=20, seed=1, **extra)
    return r.choices[0].message.content


def test_the_first_constrained_request_builds_the_tokenizer_once(tiny_models):
    cfg = build(ServeConfig, {"model": str(tiny_models["qwen2"]), "port": 0, "access_log": False,
                              "served_name": "tiny"})
    backend = make_backend(cfg)
    server = ThreadedServer(create_app(backend, cfg), cfg).start()
    try:
        _ready(server.url)
        vocab = backend.engine.engine.model.spec.vocab_size
        client = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        _ask(client)
        assert constraints.cached_lltokenizer(backend.tokenizer, vocab) is None, \
            "serve start or a free request built llguidance's tokenizer"
        fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
        assert isinstance(json.loads(_ask(client, response_format=fmt))["ok"], bool)
        built = constraints.cached_lltokenizer(backend.tokenizer, vocab)
        assert built is not None, "the constrained request did not keep the tokenizer it built"
        assert isinstance(json.loads(_ask(client, response_format=fmt))["ok"], bool)
        assert constraints.cached_lltokenizer(backend.tokenizer, vocab) is built, "the second request rebuilt it"
    finally:
        server.stop()
