"""`tunelab serve --models all`: models load on their first request, unload when idle or for room.

A private store holds three tiny random models and a finished run's adapter; the official
ollama and openai clients talk to a real server on a free loopback port.
"""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
from ollama import Client, ResponseError
from openai import NotFoundError, OpenAI

from serve_util import finish_run, make_lora_adapter, metrics, private_home, start_server

OPTS = {"temperature": 0, "num_predict": 3}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def home(tiny_models, tmp_path_factory):
    """A private $TUNELAB_HOME with models a, b, c (and a run on a), for this module only."""
    root = tmp_path_factory.mktemp("library")
    models = {name: tiny_models[arch] for name, arch in (("a", "llama"), ("b", "qwen2"), ("c", "gemma3"))}
    with private_home(root, models) as store_home:
        a_dir = store_home / "models" / "a"
        adapter = make_lora_adapter(a_dir, root / "adapter")
        finish_run(root / "runs" / "run-a", adapter, a_dir, "finished")
        yield root


@pytest.fixture(scope="module")
def server(home):
    srv = start_server(None, models=["all"], runs_dir=str(home / "runs"), max_loaded_models=2,
                       keep_alive="10m", dtype="float32", context_length=256)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(host=server.url)


def loaded(client: Client) -> dict:
    return {m.model: m for m in client.ps().models}


def wait_unloaded(client: Client, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while name in loaded(client):
        assert time.monotonic() < deadline, f"{name} still loaded"
        time.sleep(0.1)


def test_everything_is_listed_and_nothing_loaded_at_start(client, server):
    assert {m.model for m in client.list().models} == {"a", "b", "c", "run-a"}
    assert loaded(client) == {}
    ids = {m.id: m for m in OpenAI(base_url=server.url + "/v1", api_key="x").models.list().data}
    assert set(ids) == {"a", "b", "c", "run-a"} and ids["run-a"].parent == "a"


def test_first_request_loads_adapter_shares_base_and_lru_evicts(client, server):
    reply = client.chat(model="a", messages=HI, options=OPTS)
    assert reply.message.content and reply.done_reason in ("stop", "length")
    assert reply.load_duration > 0 and reply.total_duration > reply.load_duration  # this request loaded a
    assert client.chat(model="a", messages=HI, options=OPTS).load_duration < reply.load_duration
    ps = loaded(client)
    assert set(ps) == {"a"} and ps["a"].size > 0 and ps["a"].expires_at.year < 9999
    plain = client.generate(model="a", prompt="hi", options=OPTS).response
    tuned = client.generate(model="run-a", prompt="hi", options=OPTS).response
    assert set(loaded(client)) == {"a", "run-a"} and loaded(client)["run-a"].details.parent_model == "a"
    assert plain != tuned  # the adapter really runs, on the one base in memory
    oa = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    assert len(oa.embeddings.create(model="b", input=["x", "y z"]).data) == 2
    assert set(loaded(client)) == {"a", "run-a", "b"}
    assert metrics(server.url)["tunelab_num_requests_running"] == 0  # /metrics adds up the loaded models
    client.chat(model="b", messages=HI, options=OPTS)  # b is now the most recently used
    client.embed(model="c", input="hello")  # room for c: a (least recently used) goes, with its adapter
    assert set(loaded(client)) == {"b", "c"}


def test_keep_alive_zero_and_unload_requests(client):
    client.chat(model="a", messages=HI, options=OPTS, keep_alive=0)
    wait_unloaded(client, "a")
    client.generate(model="b", prompt="", keep_alive=-1)  # a load request: b stays forever
    assert loaded(client)["b"].expires_at.year == 9999
    done = client.generate(model="b", prompt="", keep_alive=0)  # an unload request
    assert done.done_reason == "unload" and "b" not in loaded(client)
    short = client.embed(model="c", input="x", keep_alive="1s")
    assert len(short.embeddings) == 1
    wait_unloaded(client, "c")


def test_requests_for_a_loading_model_wait_for_it(client):
    results: list = []

    def ask() -> None:
        results.append(client.chat(model="b", messages=HI, options=OPTS).message.content)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len(set(results)) == 1 and "b" in loaded(client)


def test_unknown_model_is_404_naming_close_names(client, server):
    with pytest.raises(ResponseError) as err:
        client.chat(model="run-b", messages=HI)
    assert err.value.status_code == 404 and "Did you mean: run-a" in str(err.value)
    with pytest.raises(NotFoundError) as oa:
        OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="bb", messages=HI)
    assert "Did you mean: b" in str(oa.value)
    r = httpx.post(server.url + "/v1/messages", json={"model": "zz", "max_tokens": 4, "messages": HI})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.post(server.url + "/api/chat", json={"model": "a", "messages": HI, "keep_alive": "5 min"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


def test_a_model_that_cannot_load_fails_alone_and_is_retried(client, home):
    weights = next((home / "home" / "models" / "c").glob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[:100])  # truncated: the load fails
    try:
        with pytest.raises(ResponseError) as err:
            client.chat(model="c", messages=HI, options=OPTS)
        assert err.value.status_code == 500 and "failed to load" in str(err.value)
        assert client.chat(model="b", messages=HI, options=OPTS).message.content  # others go on
    finally:
        weights.write_bytes(good)
    assert client.chat(model="c", messages=HI, options=OPTS).message.content  # the next request retries


def test_copy_then_delete_removes_a_store_model(client, home):
    assert client.copy("b", "bee").status == "success"
    assert client.chat(model="bee", messages=HI, options=OPTS).model == "b"
    assert client.delete("bee").status == "success"
    with pytest.raises(ResponseError) as gone:
        client.chat(model="bee", messages=HI, options=OPTS)
    assert gone.value.status_code == 404
    shutil.copytree(home / "home" / "models" / "c", home / "c-copy")
    assert client.delete("c").status == "success"
    assert "c" not in {m.model for m in client.list().models} and "c" not in loaded(client)
    assert not (home / "home" / "models" / "c").exists()
    with pytest.raises(ResponseError) as err:
        client.delete("run-a")
    assert err.value.status_code == 400 and "never deletes runs" in str(err.value)


def test_pull_streams_progress_and_serves_the_model(client, tiny_models):
    lines = list(client.pull(str(tiny_models["llama"]), stream=True))
    assert lines[-1].status == "success" and any("copying" in (x.status or "") for x in lines[:-1])
    assert client.pull("llama", stream=False).status == "success"  # now a store name: done at once
    assert "llama" in {m.model for m in client.list().models}
    assert client.chat(model="llama:latest", messages=HI, options=OPTS).message.content
    with pytest.raises(ResponseError) as err:
        client.pull("/no/such/model.gguf")
    assert err.value.status_code == 404 and "not found" in str(err.value)


def test_create_from_a_modelfile_and_from_fields(client, home):
    modelfile = f'FROM b\nADAPTER {home / "adapter"}\nSYSTEM """Be brief."""\nPARAMETER stop "###"\n'
    r = httpx.post(client._client.base_url.join("/api/create"),
                   json={"model": "b-tuned", "modelfile": modelfile, "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
    info = client.show("b-tuned")
    assert 'SYSTEM """Be brief."""' in info.modelfile and 'stop "###"' in info.parameters
    assert info.details.parent_model == "b" and "ADAPTER " in info.modelfile
    assert client.create("b-sys", from_="b", system="Say hi.", stream=False).status == "success"
    assert 'SYSTEM """Say hi."""' in client.show("b-sys").modelfile and "SYSTEM" not in client.show("b").modelfile
    names = {m.model for m in client.list().models}
    assert {"b-tuned", "b-sys"} <= names
    plain = client.generate(model="b", prompt="hi", options=OPTS).response
    assert client.generate(model="b-tuned", prompt="hi", options=OPTS).response != plain
    assert client.delete("b-tuned").status == "success" and client.delete("b-sys").status == "success"
    assert not {"b-tuned", "b-sys"} & {m.model for m in client.list().models}
    assert "b" in loaded(client)  # the base stays; only the created adapter went


def test_created_parameters_are_defaults_on_every_api(client, server):
    """`ollama create` with PARAMETERs: show lists them, and each API applies them unless the request
    says otherwise (num_predict caps the length, seed makes sampling repeat)."""
    made = client.create("b-params", from_="b", parameters={"num_predict": 2, "seed": 7, "temperature": 1.5},
                         stream=False)
    assert made.status == "success"
    info = client.show("b-params")
    assert "num_predict 2" in info.parameters and "seed 7" in info.parameters
    assert "PARAMETER temperature 1.5" in info.modelfile
    chat = client.chat(model="b-params", messages=HI)
    assert chat.eval_count == 2  # the model's num_predict
    assert client.chat(model="b-params", messages=HI).message.content == chat.message.content  # its seed
    assert client.chat(model="b-params", messages=HI, options={"num_predict": 4}).eval_count == 4
    openai = OpenAI(base_url=f"{server.url}/v1", api_key="x")
    done = openai.chat.completions.create(model="b-params", messages=HI)
    assert done.usage.completion_tokens == 2
    again = openai.chat.completions.create(model="b-params", messages=HI)
    assert again.choices[0].message.content == done.choices[0].message.content
    assert openai.completions.create(model="b-params", prompt="hi", max_tokens=3).usage.completion_tokens == 3
    assert openai.responses.create(model="b-params", input="hi").usage.output_tokens == 2
    plain = client.show("b")
    assert "num_predict" not in plain.parameters
    assert client.delete("b-params").status == "success"


def test_show_does_not_load_and_says_what_a_loaded_model_says(client):
    for name in ("b", "run-a"):
        client.generate(model=name, keep_alive=0)
        wait_unloaded(client, name)
        before = client.show(name)
        assert name not in loaded(client)  # answered from the files
        client.generate(model=name, prompt="hi", options=OPTS)
        assert name in loaded(client)
        assert client.show(name).model_dump() == before.model_dump()
    assert before.details.parent_model == "a" and "ADAPTER " in before.modelfile
    with pytest.raises(ResponseError, match="not found"):
        client.show("nope")


def test_create_names_what_it_cannot_do(client):
    for body, word in [({"modelfile": "FROM b\nMESSAGE user hi\n"}, "MESSAGE is not supported"),
                       ({"from": "b", "parameters": {"mirostat": 2}}, "PARAMETER mirostat is not supported"),
                       ({"from": "b", "parameters": {"num_predict": "many"}}, "PARAMETER num_predict"),
                       ({"from": "b", "quantize": "q4_K_M"}, "quantize"),
                       ({"from": "nope"}, "FROM nope"),
                       ({"from": "b", "template": "{{ .Prompt }}"}, "Go template")]:
        r = httpx.post(client._client.base_url.join("/api/create"), json={"model": "x", "stream": False, **body})
        assert r.status_code in (400, 404) and word in r.json()["error"], (body, r.text)


def test_ps_command_asks_the_running_server(client, server, capsys):
    from tunelab.cli import main

    client.generate(model="b", prompt="", keep_alive=-1)
    assert main(["ps", "--url", server.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "BASE", "UNTIL"]
    assert any(line.startswith("b ") and line.endswith("forever") for line in out[1:])
    assert main(["ps", "--url", "http://127.0.0.1:9"]) == 1
    assert "no server answers" in capsys.readouterr().err


def test_run_command_answers_one_prompt(home, capsys):
    from tunelab.cli import main

    assert main(["run", "b", "hello", "--max-tokens", "3", "--temperature", "0", "--dtype", "float32"]) == 0
    assert "[3 tokens" in capsys.readouterr().out
    assert main(["run", "bb", "hello"]) == 1
    assert "Did you mean" in capsys.readouterr().err


def test_bench_times_a_cold_load(server, client, capsys):
    from tunelab.cli import main

    client.generate(model="b", prompt="")  # loaded: the bench must unload it first
    argv = ["bench", "serve", "--url", server.url, "--model", "b", "--requests", "2", "--input-len", "4",
            "--output-len", "2", "--cold-load"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cold load: first token" in out and "b" in loaded(client)


def test_an_unloaded_model_leaves_memory(client, server):
    import gc
    import weakref

    client.generate(model="b", prompt="", keep_alive=-1)
    manager = server.server.config.app.state.service.models
    held, _ = manager._held("b")
    weights = weakref.ref(held.service.backend.engine.engine.model)
    del held
    assert client.generate(model="b", prompt="", keep_alive=0).done_reason == "unload"
    gc.collect()
    assert weights() is None  # nothing (engine thread, caches, the Service) still holds the model


def test_an_unload_request_lets_running_requests_finish(client, server):
    body = {"model": "b", "prompt": "hi", "max_tokens": 240, "ignore_eos": True, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # generating now
        assert client.generate(model="b", prompt="", keep_alive=0).done_reason == "unload"
        assert "b" in loaded(client)  # busy: it stays until its requests are done
        rest = [line for line in lines if line.startswith("data: {")]
    assert '"finish_reason":"length"' in rest[-1].replace(" ", "")
    wait_unloaded(client, "b")
