"""Embeddings over HTTP with the official openai and ollama clients, equal to sentence-transformers."""

from __future__ import annotations

import httpx
import pytest
import torch
from ollama import Client, ResponseError
from openai import BadRequestError, OpenAI

from helpers.st_reference import reference, save_last_token_layout
from serve_util import API_KEY, start_server

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
TEXTS = ["hello world", "a", "the quick brown fox jumps over the lazy dog", "embeddings, please"]
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def close(got, expected: torch.Tensor) -> None:
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def server(tiny_models):
    srv = start_server(tiny_models["llama"], api_key=API_KEY, served_name="tiny", dtype="float32",
                       max_num_batched_tokens=16)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def openai_client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def ollama(server) -> Client:
    return Client(host=server.url, headers=HEADERS)


@pytest.fixture(scope="module")
def expected(tiny_models) -> torch.Tensor:
    return reference(tiny_models["llama"], TEXTS)  # mean pooling, not normalised


def test_openai_client_batch_equals_sentence_transformers(openai_client, expected):
    out = openai_client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64
    assert [d.index for d in out.data] == [0, 1, 2, 3] and out.model == "tiny"
    close([d.embedding for d in out.data], unit(expected))
    assert out.usage.prompt_tokens == out.usage.total_tokens > len(TEXTS)
    short = openai_client.embeddings.create(model="tiny", input=TEXTS[0], dimensions=16,
                                            encoding_format="float")
    close([short.data[0].embedding], unit(expected[:1, :16]))


def test_token_id_inputs(openai_client, server, tiny_models):
    ids = [[344, 348, 305, 96], [5, 6]]
    out = openai_client.embeddings.create(model="tiny", input=ids, encoding_format="float")
    one = openai_client.embeddings.create(model="tiny", input=ids[0], encoding_format="float")
    assert out.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-6)
    assert out.usage.prompt_tokens == 6


def test_ollama_embed_and_legacy_embeddings(ollama, expected):
    out = ollama.embed(model="tiny", input=TEXTS)
    close(out.embeddings, unit(expected))
    assert out.prompt_eval_count > len(TEXTS)
    close(ollama.embed(model="tiny", input=TEXTS[2], dimensions=8).embeddings, unit(expected[2:3, :8]))
    close([ollama.embeddings(model="tiny", prompt=TEXTS[0]).embedding], expected[:1])  # as the model makes it
    assert ollama.embed(model="tiny", input=[]).embeddings == []  # a load request


def test_bad_requests_name_the_field(openai_client, ollama, server):
    with pytest.raises(BadRequestError) as info:
        openai_client.embeddings.create(model="tiny", input="x", dimensions=65)
    assert info.value.body["param"] == "dimensions" and "embedding length of 64" in info.value.message
    long = "hello " * 2000
    with pytest.raises(ResponseError) as err:
        ollama.embed(model="tiny", input=["ok", long], truncate=False)
    assert err.value.status_code == 400 and "input.1 has" in str(err.value)
    assert len(ollama.embed(model="tiny", input=long).embeddings[0]) == 64  # truncated by default
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "tiny", "input": []}, headers=HEADERS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    with pytest.raises(ResponseError) as err:
        ollama.embed(model="nope", input="x")
    assert err.value.status_code == 404


def test_sentence_transformers_layout_served(tiny_models, tmp_path):
    model = save_last_token_layout(tiny_models["qwen2"], tmp_path / "embed")
    srv = start_server(model, served_name="embed", dtype="float32")
    try:
        out = OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0).embeddings.create(
            model="embed", input=TEXTS)
        expected = reference(st.SentenceTransformer(str(model), device="cpu"), TEXTS)
        close([d.embedding for d in out.data], expected)
        show = Client(host=srv.url).show("embed")
        assert "embedding" in show.capabilities
        assert show.modelinfo["tunelab.pooling"] == "lasttoken pooling, L2-normalised (sentence-transformers)"
    finally:
        srv.stop()
