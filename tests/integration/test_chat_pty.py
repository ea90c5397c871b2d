"""`tunelab chat` driven through a pseudo-terminal, like a user at a keyboard."""

from __future__ import annotations

import json
import os
import sys

import pytest

from helpers.terminal import Terminal


def _chat(*args: str) -> Terminal:
    return Terminal([sys.executable, "-m", "tunelab", "chat", *args])


def test_chat_streams_and_handles_commands(tiny_models, tmp_path):
    term = _chat(str(tiny_models["gemma3"]), "--temperature", "0", "--max-tokens", "6")
    term.expect(r"/help for commands")
    term.expect(r">>> ")
    term.send("first line\\")
    term.expect(r"\.\.\. ")
    term.send("second line")
    first = term.expect(r"\[(\d+) tokens, ([\d.]+) tok/s\]")
    assert int(first.group(1)) > 0 and float(first.group(2)) > 0
    term.send('"""')
    term.send("a block")
    term.send('of two lines"""')
    term.expect(r"tok/s\]")
    term.send("/params temperature=0.5 top_k=3")
    term.expect(r"temperature=0.5 top_p=0.95 top_k=3")
    term.send("/params top_p=7")
    term.expect(r"error: .*top_p")
    term.send("/system You are terse.")
    term.expect(r"system prompt set")
    term.send("hello")
    term.expect(r"tok/s\]")
    saved = tmp_path / "conv.json"
    term.send(f"/save {saved}")
    term.expect(r"saved to")
    term.send("/exit")
    assert term.close() == 0
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == "You are terse." and messages[1]["content"] == "hello"


def test_chat_reset_and_ctrl_d(tiny_models, tmp_path):
    term = _chat(str(tiny_models["llama"]), "--temperature", "0", "--max-tokens", "3")
    term.expect(r">>> ")
    term.send("one")
    term.expect(r"tok/s\]")
    term.send("/reset")
    term.expect(r"conversation reset")
    term.send(f"/save {tmp_path / 'empty.json'}")
    term.expect(r"saved to")
    os.write(term.master, b"\x04")  # Ctrl-D ends the session
    assert term.close() == 0
    assert json.loads((tmp_path / "empty.json").read_text())["messages"] == []


def test_chat_unknown_model_is_one_line_error(tmp_path):
    term = _chat(str(tmp_path / "nope"))
    term.expect(r"error: .*nope")
    assert term.close() == 1


@pytest.mark.real_model
def test_chat_with_default_model():
    term = _chat("--temperature", "0", "--max-tokens", "12")
    term.expect(r">>> ", timeout=600)
    term.send("What is the capital of France? Answer in one word.")
    m = term.expect(r"\[(\d+) tokens, ([\d.]+) tok/s\]", timeout=120)
    assert int(m.group(1)) > 0 and float(m.group(2)) > 0
    term.send("/exit")
    assert term.close() == 0
