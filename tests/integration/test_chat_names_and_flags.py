"""`tunelab chat`: a flag for every sampling knob, Ollama-style model names, and the notice a
base model (no chat template) gets in chat and serve."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys

import pytest

from tunelab.cli import parse
from tunelab.commands.chat import ChatConfig
from tunelab.config_flags import config_from_args
from tunelab.engine.config import SamplingParams
from tunelab.errors import ModelNotFound


def test_chat_has_a_flag_for_every_sampling_knob():
    args = parse(["chat", "m", "--repetition-penalty", "1.3", "--top-k", "5", "--min-p", "0.1", "--max-tokens", "7",
                  "--presence-penalty", "0.5", "--frequency-penalty", "0.2", "--stop", "END", "--seed", "3",
                  "--temperature", "0", "--dtype", "fp32"])
    cfg = config_from_args(ChatConfig, args)
    s = cfg.sampling
    assert (s.repetition_penalty, s.top_k, s.min_p, s.max_tokens, s.presence_penalty, s.frequency_penalty,
            s.stop, s.seed, s.temperature) == (1.3, 5, 0.1, 7, 0.5, 0.2, ["END"], 3, 0.0)
    assert cfg.engine.dtype == "fp32" and cfg.engine.max_num_seqs == 1  # chat's own defaults survive
    assert s.top_p == 0.95
    from tunelab.cli import _build_parser

    _, chosen = _build_parser("chat")
    options = set(chosen._option_string_actions)  # noqa: SLF001
    missing = [f.name for f in dataclasses.fields(SamplingParams) if f"--{f.name.replace('_', '-')}" not in options]
    assert not missing, f"chat lacks flags for {missing}"
    defaults = config_from_args(ChatConfig, parse(["chat"])).sampling
    assert (defaults.max_tokens, defaults.temperature, defaults.top_p) == (512, 0.7, 0.95)


@pytest.fixture()
def store_with_models(tiny_models, tmp_path, monkeypatch):
    from tunelab.store import Store
    from tunelab.store.pull import pull

    store = Store(tmp_path / "home")
    monkeypatch.setenv("TUNELAB_HOME", str(store.home))
    for name in ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.1-8B-Instruct", "gemma3-270m", "gemma3-270m-it"):
        pull(str(tiny_models["qwen2"]), name=name, store=store)
    return store


@pytest.mark.parametrize("typed,stored", [
    ("qwen3:0.6b", "Qwen/Qwen3-0.6B"),
    ("llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct"),
    ("gemma3:270m", "gemma3-270m"),  # exact beats the -it variant
    ("gemma3-270m:latest", "gemma3-270m"),
])
def test_ollama_style_names_resolve_to_store_models(typed, stored, store_with_models):
    from tunelab.store.resolve import resolve_model

    assert resolve_model(typed, store_with_models) == resolve_model(stored, store_with_models)


def test_unknown_ollama_name_says_the_rule(store_with_models):
    from tunelab.store.resolve import resolve_model

    with pytest.raises(ModelNotFound, match="gemma3:270m = gemma3-270m"):
        resolve_model("mistral:7b", store_with_models)


@pytest.fixture(scope="module")
def base_model(tiny_models, tmp_path_factory):
    """A llama-architecture model whose tokenizer has no chat template and no <|eot_id|>: a base model."""
    out = tmp_path_factory.mktemp("base") / "tiny-base"
    shutil.copytree(tiny_models["llama"], out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # no llama3 end-of-turn token: no built-in fits
        path = out / name
        path.write_text(path.read_text(encoding="utf-8").replace("<|eot_id|>", "<|eox_id|>"), encoding="utf-8")
    return out


def test_chat_with_a_base_model_prints_a_one_line_notice(base_model, tiny_models):
    cmd = [sys.executable, "-m", "tunelab", "chat", str(base_model), "--max-tokens", "2", "--dtype", "fp32"]
    out = subprocess.run(cmd, input="/exit\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    notes = [line for line in out.stdout.splitlines() if "not a chat model" in line]
    assert len(notes) == 1 and "tunelab train" in notes[0] and "tunelab pull" in notes[0]
    chat = subprocess.run([*cmd[:4], str(tiny_models["qwen2"]), *cmd[5:]], input="/exit\n", capture_output=True,
                          text=True, timeout=300)
    assert "not a chat model" not in chat.stdout


def test_serve_logs_the_notice_for_a_base_model(base_model, caplog):
    from serve_util import start_server

    with caplog.at_level(logging.WARNING):
        server = start_server(base_model, dtype="fp32", context_length=64)
        server.stop()
    assert any("not a chat model" in r.getMessage() for r in caplog.records)
