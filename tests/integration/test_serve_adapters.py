"""Adapters: served at start, hot-loaded and removed over HTTP, and picked up from runs/ by --watch."""

from __future__ import annotations

import time

import httpx
import pytest
from openai import OpenAI

from serve_util import API_KEY, finish_run, make_lora_adapter, start_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def adapter_dir(tiny_models, tmp_path_factory):
    return make_lora_adapter(tiny_models["llama"], tmp_path_factory.mktemp("lora") / "a")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def server(tiny_models, adapter_dir, runs_dir):
    srv = start_server(tiny_models["llama"], api_key=API_KEY, served_name="base",
                       adapters={"first": str(adapter_dir)}, watch=str(runs_dir), watch_interval_s=0.1)
    yield srv
    srv.stop()


def _ids(server) -> dict[str, str | None]:
    data = httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"]
    return {m["id"]: m["parent"] for m in data}


def _greedy(server, model: str) -> str:
    client = OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    r = client.completions.create(model=model, prompt="the adapter", max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    return r.choices[0].text


def test_startup_adapter_has_parent_and_changes_output(server):
    assert _ids(server) == {"base": None, "first": "base"}
    assert _greedy(server, "first") != _greedy(server, "base")


def test_hot_load_and_delete(server, adapter_dir):
    r = httpx.post(server.url + "/v1/adapters", json={"name": "second", "path": str(adapter_dir)},
                   headers=AUTH)
    assert r.status_code == 200, r.text
    assert _ids(server)["second"] == "base"
    assert _greedy(server, "second") == _greedy(server, "first")  # same weights, same output
    dup = httpx.post(server.url + "/v1/adapters", json={"name": "second", "path": str(adapter_dir)},
                     headers=AUTH)
    assert dup.status_code == 409
    assert httpx.delete(server.url + "/v1/adapters/second", headers=AUTH).status_code == 200
    assert "second" not in _ids(server)
    gone = httpx.post(server.url + "/v1/completions", json={"model": "second", "prompt": "x"},
                      headers=AUTH)
    assert gone.status_code == 404


def test_adapter_routes_need_the_key_and_a_real_adapter(server, tmp_path):
    body = {"name": "third", "path": str(tmp_path)}
    assert httpx.post(server.url + "/v1/adapters", json=body).status_code == 401
    assert httpx.delete(server.url + "/v1/adapters/first").status_code == 401
    r = httpx.post(server.url + "/v1/adapters", json=body, headers=AUTH)
    assert r.status_code == 400 and "adapter_config.json" in r.json()["error"]["message"]
    assert httpx.delete(server.url + "/v1/adapters/nope", headers=AUTH).status_code == 404


def test_watch_serves_a_run_once_it_finishes(server, runs_dir, adapter_dir, tiny_models):
    run = runs_dir / "my-run"
    run.mkdir()
    finish_run(run, adapter_dir, tiny_models["llama"], state="running")
    time.sleep(0.5)
    assert "my-run" not in _ids(server)
    finish_run(run, adapter_dir, tiny_models["llama"], state="finished")
    deadline = time.monotonic() + 10
    while "my-run" not in _ids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ids(server)["my-run"] == "base"
    assert _greedy(server, "my-run") == _greedy(server, "first")
