"""Ollama's model routes with the official client: ps, show, copy, delete, keep_alive."""

from __future__ import annotations

import httpx
import pytest
from ollama import Client, ResponseError

from serve_util import make_lora_adapter, start_server
from test_serve_reasoning import QWEN3_STYLE


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    model = tmp_path_factory.mktemp("thinker") / "thinker"
    import shutil

    shutil.copytree(tiny_models["qwen2"], model)
    (model / "chat_template.jinja").write_text(QWEN3_STYLE)
    adapter = make_lora_adapter(model, tmp_path_factory.mktemp("lora") / "a1")
    srv = start_server(model, served_name="tiny", adapters={"a1": str(adapter)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(host=server.url)


def test_ps_lists_what_is_loaded(client):
    models = {m.model: m for m in client.ps().models}
    assert set(models) == {"tiny", "a1"}
    assert models["tiny"].context_length == 1024 and models["tiny"].expires_at.year == 9999
    assert models["a1"].details.parent_model == "tiny" and models["tiny"].size > 0


def test_show_is_full(client):
    info = client.show("tiny")
    assert set(info.capabilities) == {"completion", "embedding", "tools", "thinking"}  # ChatML: hermes tools
    assert info.template.startswith("{% for m in messages %}") and 'stop "<|im_end|>"' in info.parameters
    assert info.modelfile.startswith("FROM ") and "TEMPLATE" in info.modelfile
    assert "ADAPTER" not in info.modelfile
    assert info.modelinfo["qwen2.context_length"] == 1024
    assert "ADAPTER " in client.show("a1").modelfile and client.show("a1").details.parent_model == "tiny"


def test_copy_names_a_model_and_delete_forgets_the_name(client, server):
    assert client.copy("tiny", "my-tiny").status == "success"
    assert "my-tiny" in [m.model for m in client.list().models]
    listed = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert listed["my-tiny"]["root"] == listed["tiny"]["root"] and listed["my-tiny"]["parent"] is None
    opts = {"temperature": 0, "num_predict": 4}
    msgs = [{"role": "user", "content": "hi"}]
    a = client.chat(model="my-tiny", messages=msgs, options=opts, keep_alive="10m", think=False)
    b = client.chat(model="tiny", messages=msgs, options=opts, keep_alive=0, think=False)
    assert a.message.content == b.message.content
    assert client.delete("my-tiny").status == "success"
    with pytest.raises(ResponseError) as err:
        client.chat(model="my-tiny", messages=msgs)
    assert err.value.status_code == 404


def test_delete_unloads_an_adapter_but_never_the_base(client, server):
    assert client.copy("a1", "a1-alias").status == "success"
    assert client.delete("a1").status == "success"
    assert [m.model for m in client.ps().models] == ["tiny"]  # the adapter and its other name are gone
    r = httpx.request("DELETE", server.url + "/api/delete", json={"model": "tiny"})
    assert r.status_code == 400 and "cannot be deleted while served" in r.json()["error"]
    r = httpx.post(server.url + "/api/copy", json={"source": "tiny", "destination": "tiny"})
    assert r.status_code == 409
    with pytest.raises(ResponseError) as err:
        client.delete("nope")
    assert err.value.status_code == 404
