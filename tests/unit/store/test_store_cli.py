"""tunelab pull / list / show / rm through the CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunelab.cli import main


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from tunelab.cli import main\n"
        "for argv in (['--help'], ['pull', '--help'], ['list', '--help'], ['rm', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'gguf') if m in sys.modules]\n"
        "print(heavy, time.perf_counter() - t, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    heavy, seconds = result.stderr.strip().splitlines()[-1].rsplit(" ", 1)
    assert heavy == "[]" and float(seconds) < 1.0
    assert "pull" in result.stdout and "list" in result.stdout


def test_pull_list_show_rm(store, tiny_models, tmp_path, monkeypatch, capsys):
    assert main(["pull", str(tiny_models["llama"]), "--name", "mine"]) == 0
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "llama" in out and "float32" in out and "yes" in out

    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r2").mkdir()
    (runs / "r1" / "status.json").write_text(json.dumps(
        {"state": "finished", "base_model": store.get("mine").path, "method": "lora", "final_loss": 1.5}))
    (runs / "r2" / "status.json").write_text(json.dumps({"state": "failed", "base_model": "/elsewhere"}))
    monkeypatch.chdir(tmp_path)
    assert main(["show", "mine"]) == 0
    out = capsys.readouterr().out
    assert "hidden_size: 64" in out and "num_hidden_layers: 2" in out
    assert "<|im_start|>" in out  # first lines of the chat template
    assert "r1  finished  lora" in out and "r2" not in out

    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    assert main(["rm", "mine"]) == 1 and store.get("mine") is not None
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\n"))
    assert main(["rm", "mine"]) == 0
    assert store.get("mine") is None and not store.model_path("mine").exists()


def test_rm_yes_and_json_list(store, tiny_models, capsys):
    main(["pull", str(tiny_models["gemma3"])])
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["gemma3"]
    assert main(["rm", "gemma3", "--yes"]) == 0
    assert store.entries() == {}


@pytest.mark.parametrize("command", ["show", "rm"])
def test_unknown_name_is_one_line_with_suggestions(store, tiny_models, capsys, command):
    main(["pull", str(tiny_models["qwen2"]), "--name", "qwen-tiny"])
    capsys.readouterr()
    assert main([command, "qwen-tyni"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Did you mean: qwen-tiny" in err and "tunelab list" in err


def test_empty_list_says_how_to_start(store, capsys):
    assert main(["list"]) == 0
    assert "tunelab pull" in capsys.readouterr().out


@pytest.mark.parametrize("value,expected", [
    ("   ", None),  # blank: no template, for the store and for ChatTemplate alike
    ([{"name": "tool_use", "template": "T"}], "T"),  # named list without a default: the first
    ([{"name": "default", "template": "D"}, {"name": "x", "template": "X"}], "D"),
])
def test_store_and_chat_template_agree_on_the_models_own_template(tmp_path, value, expected):
    from tunelab.data.templates import TokenizerInfo
    from tunelab.store.describe import chat_template_of

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": value}))
    assert chat_template_of(tmp_path) == expected == TokenizerInfo.read(tmp_path).chat_template
