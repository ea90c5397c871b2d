"""pull: local dirs and GGUF files into the store; bad input leaves the store untouched."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.errors import CorruptModelFile, DiskFull, HubUnreachable, MissingExtra, ModelNotFound, TunelabError
from tunelab.store.pull import pull
from tunelab.store.resolve import resolve_model


def assert_store_clean(store, name):
    """Nothing half-written: no entry, no model dir, no temp dirs."""
    assert store.get(name) is None
    assert not store.model_path(name).exists()
    assert not store.tmp_dir.exists() or list(store.tmp_dir.iterdir()) == []


def numel(model_dir):
    from safetensors.numpy import load_file

    return sum(t.size for t in load_file(str(model_dir / "model.safetensors")).values())


def test_pull_local_dir_records_facts(store, tiny_models):
    entry = pull(str(tiny_models["qwen2"]), store=store)
    assert entry.name == "qwen2" and Path(entry.path) == store.model_path("qwen2")
    assert entry.architecture == "qwen2" and entry.dtype == "float32" and entry.has_chat_template
    assert entry.params == numel(tiny_models["qwen2"]) > 0
    assert entry.size_bytes >= (tiny_models["qwen2"] / "model.safetensors").stat().st_size
    assert entry.source == str(tiny_models["qwen2"].resolve())
    assert resolve_model("qwen2", store) == Path(entry.path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(entry.path)  # a complete HF dir
    AutoTokenizer.from_pretrained(entry.path)


def test_pull_gguf_with_name(store, make_gguf):
    entry = pull(str(make_gguf("gemma3", "Q8_0")), name="my/gemma", store=store)
    assert entry.architecture == "gemma3_text" and store.get("my/gemma") == entry
    assert store.model_path("my/gemma").name == "my--gemma"
    assert resolve_model("my/gemma", store) == Path(entry.path)


def test_pulling_twice_is_a_noop(store, tiny_models):
    first = pull(str(tiny_models["llama"]), store=store)
    stamp = os.stat(first.path).st_mtime_ns
    messages = []
    second = pull(str(tiny_models["llama"]), store=store, say=messages.append)
    assert second == first and os.stat(first.path).st_mtime_ns == stamp
    assert messages == ["llama is already in the store"]


def test_same_name_from_another_source_is_refused(store, tiny_models):
    pull(str(tiny_models["llama"]), name="m", store=store)
    with pytest.raises(TunelabError, match="already exists"):
        pull(str(tiny_models["qwen2"]), name="m", store=store)


def test_lost_model_dir_is_pulled_again(store, tiny_models):
    entry = pull(str(tiny_models["llama"]), store=store)
    shutil.rmtree(entry.path)
    with pytest.raises(ModelNotFound, match="missing directory"):
        resolve_model("llama", store)
    assert (Path(pull(str(tiny_models["llama"]), store=store).path) / "config.json").is_file()


def test_truncated_safetensors_names_the_file(store, tiny_models, tmp_path):
    bad = tmp_path / "broken"
    shutil.copytree(tiny_models["llama"], bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CorruptModelFile, match=r"broken/model\.safetensors.*truncated"):
        pull(str(bad), store=store)
    assert_store_clean(store, "broken")


def test_garbage_safetensors_and_bad_config_name_the_file(store, tiny_models, tmp_path):
    bad = tmp_path / "garbage"
    shutil.copytree(tiny_models["llama"], bad)
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!}     ")
    with pytest.raises(CorruptModelFile, match=r"garbage/model\.safetensors"):
        pull(str(bad), store=store)
    (bad / "config.json").write_text("{oops")
    with pytest.raises(CorruptModelFile, match=r"garbage/config\.json"):
        pull(str(bad), store=store)
    assert_store_clean(store, "garbage")


def test_dir_without_safetensors_is_refused(store, tmp_path):
    d = tmp_path / "binonly"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CorruptModelFile, match="no .*safetensors"):
        pull(str(d), store=store)
    assert_store_clean(store, "binonly")


def test_corrupt_gguf_pull_leaves_nothing(store, make_gguf, tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(make_gguf("qwen2", "Q8_0").read_bytes()[:-3000])
    with pytest.raises(CorruptModelFile, match="cut.gguf"):
        pull(str(bad), store=store)
    assert_store_clean(store, "cut")


def _full_disk_after(monkeypatch, ok_writes: int):
    """Simulate the OS: the (ok_writes+1)-th write to a regular file fails with ENOSPC."""
    real, calls = os.write, {"n": 0}

    def write(fd, data):
        if fd > 2:
            calls["n"] += 1
            if calls["n"] > ok_writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("ok_writes", [0, 3])
def test_full_disk_during_gguf_import(store, make_gguf, monkeypatch, ok_writes):
    gguf = make_gguf("llama", "Q8_0")
    _full_disk_after(monkeypatch, ok_writes)
    with pytest.raises(DiskFull, match=r"disk full while writing .*model\.safetensors"):
        pull(str(gguf), name="full", store=store)
    monkeypatch.undo()
    assert_store_clean(store, "full")


def test_full_disk_during_dir_copy(store, tiny_models, monkeypatch):
    _full_disk_after(monkeypatch, 1)
    with pytest.raises(DiskFull, match="nothing was added"):
        pull(str(tiny_models["gemma3"]), store=store)
    monkeypatch.undo()
    assert_store_clean(store, "gemma3")


def test_unknown_name_lists_close_matches(store, tiny_models):
    pull(str(tiny_models["llama"]), name="tiny-llama", store=store)
    with pytest.raises(ModelNotFound, match=r"Did you mean: tiny-llama.*tunelab list"):
        resolve_model("tiny-lama", store)
    with pytest.raises(ModelNotFound, match="does-not-exist.gguf"):
        resolve_model("does-not-exist.gguf", store)


def test_resolve_pulls_a_gguf_path_on_first_use(store, make_gguf):
    gguf = make_gguf("qwen2", "Q8_0")
    path = resolve_model(str(gguf), store)
    assert store.get(gguf.stem).path == str(path)
    assert resolve_model(str(gguf), store) == path  # second use: from the index, no import


def test_offline_hub_id_fails_fast_with_one_line(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(HubUnreachable, match="cannot reach the Hugging Face Hub.*offline") as err:
        resolve_model("someorg/not-pulled-yet", store)
    assert time.time() - started < 10 and "\n" not in str(err.value)
    assert_store_clean(store, "someorg/not-pulled-yet")


def test_modelscope_without_the_package_gives_an_install_hint(store):
    try:
        import modelscope  # noqa: F401
        pytest.skip("modelscope is installed")
    except ImportError:
        pass
    with pytest.raises(MissingExtra, match=r"pip install 'tunelab\[modelscope\]'"):
        pull("modelscope:Qwen/Qwen2.5-0.5B-Instruct", store=store)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=120, **kw)


def test_unreachable_hub_cli_error_is_one_line(store):
    """A hub endpoint nobody listens on (loopback, closed port): fast, one line, no traceback."""
    started = time.time()
    result = _cli("pull", "someorg/somemodel",
                  env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"})
    assert result.returncode == 1 and time.time() - started < 30
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the Hugging Face Hub" in errors[0]
    assert "Traceback" not in result.stderr


def test_concurrent_pulls_keep_the_index_whole(store, tiny_models, make_gguf):
    """Three real processes at once: two different models and a duplicate of one of them."""
    gguf = make_gguf("llama", "Q8_0")
    sources = [str(gguf), str(tiny_models["qwen2"]), str(gguf)]
    procs = [subprocess.Popen([sys.executable, "-m", "tunelab", "pull", src], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for src in sources]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    index = json.loads(store.index_path.read_text())
    assert sorted(index) == sorted([gguf.stem, "qwen2"])
    assert sum("already in the store" in err for _, err in outputs) == 1  # the duplicate waited, then reused
    for entry in index.values():
        assert (Path(entry["path"]) / "model.safetensors").is_file()
    assert list(store.tmp_dir.iterdir()) == []
