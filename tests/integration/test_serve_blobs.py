"""`ollama create` with uploaded files: the official ollama client uploads blobs (`create_blob`,
HEAD then POST /api/blobs/sha256:HEX), then creates a model from them (`files`, `adapters`).

A private store holds one tiny random model and a LoRA adapter on it; a real server on a free
loopback port serves every model there (`--models all`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from ollama import Client, ResponseError

from serve_util import make_lora_adapter, private_home, start_server

OPTS = {"temperature": 0, "num_predict": 3}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def home(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    with private_home(root, {"a": tiny_models["llama"]}) as store_home:
        make_lora_adapter(store_home / "models" / "a", root / "adapter")
        yield root


@pytest.fixture(scope="module")
def client(home):
    srv = start_server(None, models=["all"], runs_dir=str(home / "runs"), dtype="float32", context_length=256)
    yield Client(host=srv.url)
    srv.stop()


def upload(client: Client, folder: Path) -> dict[str, str]:
    return {p.name: client.create_blob(p) for p in sorted(folder.iterdir()) if p.is_file()}


def blob_url(client: Client, digest: str) -> str:
    return str(client._client.base_url.join(f"/api/blobs/{digest}"))


def test_upload_checks_the_digest_and_keeps_only_whole_blobs(client, home):
    body = b"tunelab blob"
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    assert httpx.head(blob_url(client, good)).status_code == 404
    bad = httpx.post(blob_url(client, good), content=body + b"!")
    assert bad.status_code == 400 and "digest mismatch" in bad.json()["error"], bad.text
    assert httpx.head(blob_url(client, good)).status_code == 404  # nothing kept
    assert list((home / "home" / "blobs").iterdir()) == []  # no temp file left either
    assert httpx.post(blob_url(client, good), content=body).status_code == 201
    assert httpx.head(blob_url(client, good)).status_code == 200
    assert httpx.post(blob_url(client, good), content=body).status_code == 200  # already there
    for digest in ("sha256:abc", "md5:" + "0" * 64):
        r = httpx.post(blob_url(client, digest), content=body)
        assert r.status_code == 400 and digest in r.json()["error"], r.text
        assert httpx.head(blob_url(client, digest)).status_code == 400


def test_create_from_an_uploaded_gguf(client, home, tmp_path):
    from tunelab.export.gguf.writer import write_gguf

    gguf = write_gguf(home / "home" / "models" / "a", tmp_path / "tiny.gguf", log=lambda _: None)
    files = upload(client, tmp_path)
    assert client.create(model="from-gguf", files=files, system="Be brief.").status == "success"
    assert client.chat(model="from-gguf", messages=HI, options=OPTS).message.content
    assert 'SYSTEM """Be brief."""' in client.show("from-gguf").modelfile
    assert gguf.is_file() and client.delete("from-gguf").status == "success"


def test_create_from_uploaded_model_files_and_adapter(client, home, tiny_models):
    files = upload(client, tiny_models["llama"])
    assert "config.json" in files
    assert client.create(model="from-files", files=files).status == "success"
    plain = client.generate(model="from-files", prompt="hi", options=OPTS).response
    assert plain == client.generate(model="a", prompt="hi", options=OPTS).response  # the same weights
    adapter = upload(client, home / "adapter")
    assert client.create(model="a-lora", from_="a", adapters=adapter).status == "success"
    info = client.show("a-lora")
    assert info.details.parent_model == "a" and "ADAPTER " in info.modelfile
    assert client.generate(model="a-lora", prompt="hi", options=OPTS).response != plain


def test_create_names_what_is_wrong_with_uploads(client, home):
    missing = "sha256:" + "1" * 64
    known = next(iter(upload(client, home / "adapter").values()))
    for body, word in [({"files": {"m.gguf": missing}}, "was not uploaded"),
                       ({"files": {"m.gguf": "sha256:zz"}}, "files.m.gguf"),
                       ({"files": {"../x.gguf": known}}, "plain relative file name"),
                       ({"files": {"weights.bin": known}}, "no config.json"),
                       ({"files": {"m.gguf": known, "config.json": known}}, "GGUF is served alone"),
                       ({"from": "a", "files": {"m.gguf": known}}, "not both"),
                       ({"from": "a", "adapters": {"weights.bin": known}}, "no adapter_config.json"),
                       ({"files": {"m.gguf": "/srv/m.gguf"}}, "digest of an uploaded blob")]:
        r = httpx.post(client._client.base_url.join("/api/create"), json={"model": "x", "stream": False, **body})
        assert r.status_code == 400 and word in r.json()["error"], (body, r.text)
    with pytest.raises(ResponseError, match="not found"):
        client.show("x")
