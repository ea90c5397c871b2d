"""The last loose error paths of the API server (issue 13): operator routes behind the key,
loose validation, Ollama's own error shape, stalled bodies, bad adapters and run folders."""

from __future__ import annotations

import json
import socket
import time

import httpx
import ollama
import pytest

from serve_util import API_KEY, finish_run, make_lora_adapter, metrics, start_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["llama"], api_key=API_KEY, served_name="tiny", body_timeout_s=1.0,
                       max_stop_sequences=4, max_stop_length=20)
    yield srv
    srv.stop()


def _post(server, path, body=None, content=None):
    return httpx.post(server.url + path, json=body, content=content, timeout=30,
                      headers={**AUTH, "Content-Type": "application/json"})


def _openai_error(r, status: int, param: str | None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    return err["message"]


# ---- 3: operator routes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json"])
def test_operator_routes_need_the_key(server, path):
    assert httpx.get(server.url + path).status_code == 401
    assert httpx.get(server.url + path, headers=AUTH).status_code == 200
    assert httpx.get(server.url + "/docs").status_code in (401, 404)


def test_health_says_only_ready(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_public_metrics_setting_opens_them(tiny_models):
    srv = start_server(tiny_models["llama"], api_key=API_KEY, public_metrics=True)
    try:
        assert httpx.get(srv.url + "/metrics").status_code == 200
        assert "/v1/chat/completions" in httpx.get(srv.url + "/openapi.json").json()["paths"]
        assert httpx.get(srv.url + "/v1/models").status_code == 401
    finally:
        srv.stop()


# ---- 5: loose validation --------------------------------------------------------------------------


@pytest.mark.parametrize("path, raw, param", [
    ("/v1/completions", b'{"model": "tiny", "prompt": [true]}', "prompt.0"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "repetition_penalty": Infinity}',
     "repetition_penalty"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "temperature": NaN}', "temperature"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "a\\ud800b"}', "prompt"),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udc00"}]}',
     "messages.0.content"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": "' + b"s" * 21 + b'"}', "stop"),
])
def test_loose_values_are_400_naming_the_field(server, path, raw, param):
    message = _openai_error(_post(server, path, content=raw), 400, param)
    assert param.split(".")[0] in message and "tokeniz" not in message.lower()


# ---- 4: Ollama's error shape ----------------------------------------------------------------------


def _ollama_error(r, status: int) -> str:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
    return r.json()["error"]


@pytest.mark.parametrize("stream", [True, False])
def test_ollama_bad_option_is_a_400_before_streaming(server, stream):
    body = {"model": "tiny", "messages": CHAT, "stream": stream, "options": {"top_k": -5}}
    message = _ollama_error(_post(server, "/api/chat", body), 400)
    assert "top_k" in message and "Error" not in message.split()[0]
    body = {"model": "tiny", "prompt": "x", "stream": stream, "options": {"stop": list("abcdef")}}
    assert "options.stop" in _ollama_error(_post(server, "/api/generate", body), 400)


@pytest.mark.parametrize("stream", [True, False])
def test_ollama_engine_rejection_is_a_400(server, stream):
    long = "word " * 2000  # longer than the 1024-token context
    body = {"model": "tiny", "prompt": long, "raw": True, "stream": stream}
    assert "context" in _ollama_error(_post(server, "/api/generate", body), 400)


def test_ollama_errors_with_the_official_client(server):
    client = ollama.Client(host=server.url, headers=AUTH)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=CHAT)
    assert err.value.status_code == 404 and "nope" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="tiny", messages=CHAT, stream=True, options={"top_k": -5}))
    assert err.value.status_code == 400 and "top_k" in err.value.error
    _ollama_error(_post(server, "/api/chat", {"model": "tiny", "messages": "hi"}), 400)


def test_ollama_empty_messages_load_the_model(server):
    reply = ollama.Client(host=server.url, headers=AUTH).chat(model="tiny", messages=[])
    assert reply.done and reply.done_reason == "load" and reply.message.content == ""


# ---- 6: stalled bodies and engine rejections in /metrics -------------------------------------------


def _http_counts(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", headers=AUTH).text
    return {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith("tunelab_http_requests_total{")}


def test_stalled_body_times_out_with_408(server):
    before = _http_counts(server.url).get("400", 0)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n{{".encode())
        start = time.monotonic()
        reply = sock.recv(65536)
        while not reply.endswith(b"}") and (more := sock.recv(65536)):
            reply += more
    assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5, reply
    assert b"body_timeout" in reply
    counts = _http_counts(server.url)
    assert counts.get("408", 0) >= 1 and counts.get("400", 0) == before


def test_engine_rejection_counts_as_an_error(server):
    before = metrics(server.url)
    message = _openai_error(_post(server, "/v1/completions", {"model": "tiny", "prompt": [10**7]}),
                            400, "prompt")
    assert "token ids" in message
    streamed = {"model": "tiny", "prompt": [10**7], "stream": True}
    _openai_error(_post(server, "/v1/completions", streamed), 400, "prompt")  # before any SSE
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    after = metrics(server.url)
    assert after["tunelab_request_errors_total"] == before.get("tunelab_request_errors_total", 0) + 2
    assert 'finished_reason="error"' not in text


# ---- 2: bad adapters and run folders --------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return make_lora_adapter(tiny_models["llama"], tmp_path_factory.mktemp("lora") / "adapter")


@pytest.mark.parametrize("weights", [b"", b"not a safetensors file at all" * 10])
def test_bad_adapter_weights_are_400_naming_the_file(server, adapter, tmp_path, weights):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    (bad / "adapter_model.safetensors").write_bytes(weights)
    r = _post(server, "/v1/adapters", {"name": f"bad{len(weights)}", "path": str(bad)})
    message = _openai_error(r, 400, "path")
    assert str(bad / "adapter_model.safetensors") in message


def test_overlong_adapter_path_is_400(server):
    message = _openai_error(_post(server, "/v1/adapters", {"name": "long", "path": "/x" * 2500}), 400,
                            "path")
    assert "too long" in message and len(message) < 400


def test_adapter_from_a_run_folder(server, adapter, tiny_models, tmp_path):
    run = tmp_path / "runs" / "myrun"
    finish_run(run, adapter, tiny_models["llama"], "finished")
    r = _post(server, "/v1/adapters", {"name": "myrun", "path": str(run)})
    assert r.status_code == 200, r.text
    assert r.json()["root"] == str(run / "adapter")
    body = {"model": "myrun", "prompt": "x", "max_tokens": 2}
    assert _post(server, "/v1/completions", body).json()["usage"]["completion_tokens"] >= 1
    assert json.loads(httpx.delete(server.url + "/v1/adapters/myrun", headers=AUTH).text)["deleted"]
