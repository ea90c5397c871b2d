"""Ollama bundles: GGUF + Modelfile with TEMPLATE, stops and SYSTEM."""

from __future__ import annotations

import json

import pytest

from tunelab.data.templates import ChatTemplate
from tunelab.export.errors import ExportError
from tunelab.export.exporter import export
from tunelab.export.modelfile import render_modelfile
from helpers.run_factory import copy_run


def test_ollama_export_of_a_run(tiny_runs, tmp_path, capsys):
    result = export(str(tiny_runs["llama"]), "ollama", "q8_0", tmp_path / "bundle",
                    system="You are terse.")
    text = (tmp_path / "bundle" / "Modelfile").read_text()
    assert text.startswith(f"FROM ./{result.gguf.name}\n") and result.gguf.is_file()
    assert 'TEMPLATE """{{- $prev := "" }}{{ range $i, $_ := .Messages }}' in text and "<|im_start|>{{ .Role }}" in text
    assert 'PARAMETER stop "<|im_end|>"\n' in text
    assert 'SYSTEM """You are terse."""' in text
    assert f"ollama create run-llama -f {tmp_path / 'bundle' / 'Modelfile'}" in capsys.readouterr().out


@pytest.mark.parametrize("name,eos,marker,stop", [
    ("llama3", "<|end_of_text|>", "<|start_header_id|>", "<|eot_id|>"),
    ("gemma", "<eos>", "<start_of_turn>model", "<end_of_turn>"),
    ("mistral", "</s>", "[INST]", "</s>"),
    ("default", "<eos>", "### Assistant:\n{{ .Content }}<eos>{{ end }}", "<eos>")])
def test_each_family_gets_its_template(name, eos, marker, stop):
    text = render_modelfile("m.gguf", ChatTemplate.builtin(name, eos_token=eos, system="Be brief."))
    assert marker in text and f'PARAMETER stop "{stop}"' in text
    assert f'PARAMETER stop "{eos}"' in text and 'SYSTEM """Be brief."""' in text


def test_tokenizer_template_maps_to_the_family_it_renders_like(tiny_models):
    template = ChatTemplate.for_model(tiny_models["qwen2"])  # the tiny tokenizer's own ChatML jinja
    assert template.name == "tokenizer" and template.builtin_family() == "chatml"
    text = render_modelfile("m.gguf", template)
    assert "<|im_start|>{{ .Role }}" in text and 'PARAMETER stop "<|im_end|>"' in text


def test_custom_jinja_fails_before_writing(tiny_runs, tmp_path):
    run_dir = copy_run(tiny_runs["qwen2"], tmp_path / "custom")
    custom = {"name": "custom", "source": "{{ messages[0]['content'] }}", "stop_strings": ["###"],
              "bos_token": "", "eos_token": "<|im_end|>"}
    (run_dir / "adapter" / "tunelab_template.json").write_text(json.dumps(custom))
    with pytest.raises(ExportError, match="no Ollama equivalent"):
        export(str(run_dir), "ollama", "f16", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
