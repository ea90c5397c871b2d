"""One chat template from training to serving and export, by construction.

For every built-in template and a tokenizer's own, a tiny llama is trained (2 steps, the real
`train`) with that template on a base whose own template differs from all of them. The prompt
ids must then be identical in training's encoding, `LLM.chat`, `tunelab chat`'s engine path,
one server holding the base and every adapter (OpenAI and Ollama routes: the base with its
template, each adapter with the one it was trained with) and the exported GGUF's template.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from ollama import Client
from openai import OpenAI

from serve_util import start_server
from tunelab.data.builtin_templates import BUILTINS
from tunelab.data.templates import ChatTemplate, encode_prompt, resolve_template, saved_template

TEMPLATES = [*BUILTINS, "tokenizer"]  # "tokenizer": no data.template, the base's own jinja
SYSTEM = "You answer in one word."
PROMPT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Capital of France?"}]
ROW = {"messages": [*PROMPT, {"role": "assistant", "content": "Paris."}]}
# The base's own template: like no built-in, so an adapter rendered with it would show.
BASE_JINJA = ("{% for m in messages %}{{ '<start_of_turn>' + m['role'] + ':\\n' + m['content'] + '<end_of_turn>' }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>assistant:\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def base(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "tiny-llama"
    shutil.copytree(tiny_models["llama"], out)
    (out / "chat_template.jinja").write_text(BASE_JINJA, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tokenizer(base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """template name -> (run dir, the prompt ids training encoded for PROMPT)."""
    from tunelab.config import build
    from tunelab.train.config import TrainConfig
    from tunelab.train.setup import prepare_data
    from tunelab.train.trainer import train

    root = tmp_path_factory.mktemp("runs")
    data = root / "data.jsonl"
    data.write_text(json.dumps(ROW) + "\n", encoding="utf-8")
    out = {}
    for name in TEMPLATES:
        values = {"model": str(base), "output": str(root / name), "datasets": [str(data)], "max_steps": 2,
                  "micro_batch_size": 1, "lora": {"rank": 4}, "data": {"cutoff_len": 96}, "seed": 0}
        if name != "tokenizer":
            values["data"]["template"] = name
        cfg = build(TrainConfig, values)
        result = train(cfg)
        assert result.state == "finished"
        _, template, examples = prepare_data(cfg, base, None)  # training's own encoding of the row
        assert template == saved_template(result.run_dir / "adapter")
        example = examples.train[0]
        start = next(i for i, label in enumerate(example.labels) if label != -100)
        out[name] = (result.run_dir, example.input_ids[:start])
    return out


@pytest.fixture(scope="module")
def base_ids(base, tokenizer):
    return encode_prompt(resolve_template(base), tokenizer, PROMPT)


@pytest.fixture(scope="module")
def llm(base, trained):
    from tunelab.engine.llm import LLM

    return LLM(str(base), adapters={name: run / "adapter" for name, (run, _) in trained.items()}, device="cpu")


@pytest.fixture(scope="module")
def server(base, trained):
    adapters = {name: str(run / "adapter") for name, (run, _) in trained.items()}
    srv = start_server(base, served_name="base", adapters=adapters)
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", TEMPLATES)
def test_training_encodes_what_serving_encodes(name, trained, base_ids, tokenizer, base):
    from tunelab.rundir import load_finished

    run, ids = trained[name]
    saved = saved_template(run / "adapter")
    assert saved.name == name
    assert ids == encode_prompt(saved, tokenizer, PROMPT)
    assert load_finished(run).chat_template() == saved  # eval and export read the run through this
    assert (ids == base_ids) == (name == "tokenizer")  # the test has teeth: formats differ


@pytest.mark.parametrize("name", TEMPLATES)
def test_llm_chat_and_chat_command(name, trained, base_ids, llm, base):
    from tunelab.commands.chat import Chat, resolve_target
    from tunelab.engine.config import SamplingParams

    run, ids = trained[name]
    params = SamplingParams(max_tokens=1, temperature=0)
    assert llm.chat(PROMPT, params, adapter=name)[0].prompt_token_ids == ids
    assert llm.chat(PROMPT, params)[0].prompt_token_ids == base_ids
    model, adapter = resolve_target(str(run), None)  # `tunelab chat RUN`
    assert (str(model), adapter) == (str(base), run / "adapter")
    chat = Chat(llm.engine, params, SYSTEM, name)
    chat.messages = PROMPT[1:]
    assert encode_prompt(chat.template, llm.tokenizer, chat.conversation()) == ids


@pytest.mark.parametrize("name", TEMPLATES)
def test_server_renders_base_and_each_adapter_with_its_template(name, trained, base_ids, server):
    openai = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    ollama = Client(host=server.url)
    for model, ids in ((name, trained[name][1]), ("base", base_ids)):
        # The same greedy logprobs as a completion of the expected ids: the server used those ids.
        greedy = dict(model=model, max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
        chat = openai.chat.completions.create(messages=PROMPT, logprobs=True, top_logprobs=2, **greedy)
        raw = openai.completions.create(prompt=ids, logprobs=2, **greedy)
        assert chat.usage.prompt_tokens == raw.usage.prompt_tokens == len(ids)
        assert [t.logprob for t in chat.choices[0].logprobs.content] == pytest.approx(
            raw.choices[0].logprobs.token_logprobs, abs=1e-4)
        reply = ollama.chat(model=model, messages=PROMPT, options={"temperature": 0, "num_predict": 4})
        plain = openai.completions.create(model=model, prompt=ids, max_tokens=4, temperature=0)
        assert reply.prompt_eval_count == len(ids)
        assert reply.message.content == plain.choices[0].text


@pytest.mark.parametrize("name", TEMPLATES)
def test_exported_gguf_carries_the_template(name, trained, tokenizer, tmp_path):
    import gguf

    from tunelab.export.exporter import export

    run, ids = trained[name]
    path = export(str(run), "gguf", "f16", out=tmp_path / "m.gguf", log=lambda _: None).path
    fields = gguf.GGUFReader(str(path)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    token = lambda key: tokens[fields[key].contents()] if key in fields else ""
    # Rendered as llama.cpp renders it: the file's jinja with the file's BOS and EOS tokens.
    template = ChatTemplate("gguf", fields["tokenizer.chat_template"].contents(),
                            bos_token=token("tokenizer.ggml.bos_token_id"), eos_token=token("tokenizer.ggml.eos_token_id"))
    assert encode_prompt(template, tokenizer, PROMPT) == ids
    if importlib.util.find_spec("llama_cpp"):  # and llama.cpp's own tokenizer of the file agrees
        import llama_cpp

        vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        text = template.render(PROMPT, add_generation_prompt=True)
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == ids


def test_adapter_with_an_unreadable_template_is_refused(trained, server, tmp_path):
    import httpx

    broken = shutil.copytree(trained["chatml"][0] / "adapter", tmp_path / "broken")
    (broken / "tunelab_template.json").write_text("{not json", encoding="utf-8")
    r = httpx.post(server.url + "/v1/adapters", json={"name": "broken", "path": str(broken)})
    assert r.status_code == 400 and "tunelab_template.json" in r.json()["error"]["message"]
    models = httpx.get(server.url + "/v1/models").json()["data"]
    assert "broken" not in [m["id"] for m in models]  # not served with some other template
