"""`export --format ollama` after `--format gguf` (same run, same quant) links the GGUF, never redoes it."""

from __future__ import annotations

import os
import time

from helpers.run_factory import copy_run
from tunelab.export.exporter import export


def test_ollama_reuses_the_gguf_just_exported(tiny_runs, tmp_path):
    run = copy_run(tiny_runs["llama"], tmp_path / "run")
    lines: list[str] = []
    gguf = export(str(run), "gguf", "q8_0", log=lines.append).gguf
    bundle = export(str(run), "ollama", "q8_0", log=lines.append)
    assert os.path.samefile(bundle.gguf, gguf)  # one file on disk, two names
    assert any(line.startswith(f"reusing {gguf}") for line in lines)
    assert (bundle.path / "Modelfile").read_text().startswith(f"FROM ./{bundle.gguf.name}\n")

    other = export(str(run), "ollama", "f16", tmp_path / "f16-bundle", log=lines.append)
    assert not os.path.samefile(other.gguf, gguf)  # another quant is written anew


def test_a_changed_run_is_exported_again(tiny_runs, tmp_path):
    run = copy_run(tiny_runs["llama"], tmp_path / "run")
    gguf = export(str(run), "gguf", "q8_0", log=lambda _m: None).gguf
    later = time.time() + 5
    for part in (run / "adapter").iterdir():
        os.utime(part, (later, later))  # the adapter changed after that export
    lines: list[str] = []
    bundle = export(str(run), "ollama", "q8_0", log=lines.append)
    assert not os.path.samefile(bundle.gguf, gguf) and not any("reusing" in line for line in lines)
