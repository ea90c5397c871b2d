"""Bad input over raw HTTP: each gets the right status and an OpenAI-shaped error, and the
server keeps serving. Also: disconnect mid-stream, bounded queue, a soak with no KV leak."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from openai import AsyncOpenAI

from serve_util import API_KEY, start_server, wait_idle

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["llama"], api_key=API_KEY, served_name="tiny",
                       max_body_bytes=20_000, max_tokens_limit=512)
    yield srv
    srv.stop()


def _post(server, path, body=None, content=None, headers=AUTH):
    headers = {**headers, "Content-Type": "application/json"}
    return httpx.post(server.url + path, json=body, content=content, headers=headers, timeout=30)


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _still_serving(server):
    r = _post(server, "/v1/completions", {"model": "tiny", "prompt": "ok", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_malformed_json(server):
    err = _error(_post(server, "/v1/chat/completions", content=b'{"model": "tiny", "messages": ['), 400)
    assert "JSON" in err["message"]
    _still_serving(server)


@pytest.mark.parametrize("field, value", [("temperature", "hot"), ("max_tokens", -3),
                                          ("messages", "hi"), ("top_p", 1.5), ("n", 0)])
def test_wrong_types_and_ranges_name_the_field(server, field, value):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], field: value}
    err = _error(_post(server, "/v1/chat/completions", body), 400)
    assert err["param"] == field and field in err["message"]


def test_unknown_model(server):
    err = _error(_post(server, "/v1/completions", {"model": "nope", "prompt": "x"}), 404)
    assert err["code"] == "model_not_found" and "nope" in err["message"] and "tiny" in err["message"]


def test_huge_body(server):
    body = {"model": "tiny", "prompt": "x" * 50_000}
    err = _error(_post(server, "/v1/completions", body), 413)
    assert "20000" in err["message"]
    _still_serving(server)


def test_huge_body_without_content_length(server):
    def chunks():
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}'

    _error(_post(server, "/v1/completions", content=chunks()), 413)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_missing_or_wrong_api_key(server, headers):
    err = _error(_post(server, "/v1/completions", {"model": "tiny", "prompt": "x"}, headers=headers), 401)
    assert err["type"] == "authentication_error"
    assert httpx.get(server.url + "/api/tags", headers=headers).status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200  # health stays open for probes


def test_over_long_prompt_names_both_numbers(server):
    err = _error(_post(server, "/v1/completions", {"model": "tiny", "prompt": list(range(3, 1100))}), 400)
    assert "1024" in err["message"] and "1097" in err["message"]
    assert err["code"] == "context_length_exceeded"
    body = {"model": "tiny", "prompt": list(range(3, 903)), "max_tokens": 300}
    err = _error(_post(server, "/v1/completions", body), 400)
    assert "1024" in err["message"] and "1200" in err["message"] and "900" in err["message"]


def test_max_tokens_limit(server):
    err = _error(_post(server, "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 600}), 400)
    assert err["param"] == "max_tokens" and "512" in err["message"]


def test_unknown_route_is_openai_shaped(server):
    assert _error(httpx.get(server.url + "/v1/nothing", headers=AUTH), 404)


def test_disconnect_mid_stream_aborts_generation(server):
    body = {"model": "tiny", "prompt": "go", "max_tokens": 500, "stream": True, "ignore_eos": True}
    payload = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                     + payload)
        got = b""
        while got.count(b"data: ") < 3:  # generation is under way
            got += sock.recv(65536)
    m = wait_idle(server.url)
    assert m["tunelab_kv_cache_usage_perc"] == 0 and m["tunelab_num_requests_running"] == 0
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert 'tunelab_request_success_total{finished_reason="abort"}' in text, text[-600:]
    _still_serving(server)


def test_soak_200_requests_at_concurrency_16(server):
    async def go():
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
        gate = asyncio.Semaphore(16)

        async def one(i):
            async with gate:
                if i % 2:
                    r = await client.completions.create(model="tiny", prompt=f"req {i}", max_tokens=4,
                                                        extra_body={"ignore_eos": True})
                    return r.usage.completion_tokens
                stream = await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"req {i}"}], max_tokens=4,
                    stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
                return [c async for c in stream][-1].usage.completion_tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            await client.close()

    start = time.monotonic()
    counts = asyncio.run(go())
    assert counts == [4] * 200  # ignore_eos: exactly max_tokens each
    m = wait_idle(server.url)
    assert m["tunelab_kv_cache_usage_perc"] == 0, "KV blocks leaked"
    assert m["tunelab_num_requests_pending"] == 0
    assert time.monotonic() - start < 120


def test_bounded_queue_answers_429(tiny_models):
    srv = start_server(tiny_models["llama"], max_pending=2)
    try:
        async def go():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                body = {"model": "tiny_llama", "prompt": "x", "max_tokens": 200, "ignore_eos": True}
                body["model"] = (await c.get("/v1/models")).json()["data"][0]["id"]
                return await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(6)))

        statuses = sorted(r.status_code for r in asyncio.run(go()))
        assert statuses.count(200) >= 2 and 429 in statuses
        rejected = next(r for r in asyncio.run(go()) if r.status_code == 429)
        assert rejected.headers["retry-after"] and rejected.json()["error"]["type"] == "rate_limit_error"
    finally:
        srv.stop()
