"""Ollama bundles: GGUF + Modelfile with TEMPLATE, stops and SYSTEM."""

from __future__ import annotations

import json

import pytest

from tunelab.export.chat import TemplateInfo
from tunelab.export.errors import ExportError
from tunelab.export.exporter import export
from tunelab.export.modelfile import render_modelfile
from unit.export.run_factory import copy_run


def test_ollama_export_of_a_run(tiny_runs, tmp_path, capsys):
    result = export(str(tiny_runs["llama"]), "ollama", "q8_0", tmp_path / "bundle",
                    system="You are terse.")
    text = (tmp_path / "bundle" / "Modelfile").read_text()
    assert text.startswith(f"FROM ./{result.gguf.name}\n") and result.gguf.is_file()
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in text
    assert 'PARAMETER stop "<|im_end|>"\n' in text
    assert 'SYSTEM """You are terse."""' in text
    assert f"ollama create run-llama -f {tmp_path / 'bundle' / 'Modelfile'}" in capsys.readouterr().out


@pytest.mark.parametrize("name,marker,stop", [("llama3", "<|start_header_id|>", "<|eot_id|>"),
                                              ("gemma", "<start_of_turn>model", "<end_of_turn>"),
                                              ("mistral", "[INST]", "</s>")])
def test_each_family_gets_its_template(name, marker, stop):
    text = render_modelfile("m.gguf", TemplateInfo(name, "", [stop]))
    assert marker in text and f'PARAMETER stop "{stop}"' in text


def test_custom_jinja_fails_before_writing(tiny_runs, tmp_path):
    run_dir = copy_run(tiny_runs["qwen2"], tmp_path / "custom")
    custom = {"name": "custom", "source": "{{ messages[0]['content'] }}", "stop_strings": ["###"],
              "bos_token": "", "eos_token": "<|im_end|>"}
    (run_dir / "adapter" / "tunelab_template.json").write_text(json.dumps(custom))
    with pytest.raises(ExportError, match="no Ollama equivalent"):
        export(str(run_dir), "ollama", "f16", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
