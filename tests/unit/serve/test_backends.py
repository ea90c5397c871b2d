"""Backend selection and the clear errors of optional backends that are absent or unusable."""

import importlib.util

import pytest

from tunelab.config import build
from tunelab.errors import ConfigError, MissingExtra, ModelNotFound
from tunelab.serve.backends import make_backend
from tunelab.serve.backends.llamacpp import gguf_path
from tunelab.serve.config import ServeConfig


def test_each_backend_states_what_it_supports():
    for name in ("engine", "llamacpp", "vllm"):
        backend = make_backend(ServeConfig(backend=name))
        assert backend.name == name and backend.capabilities.note


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_a_clear_error():
    with pytest.raises(MissingExtra, match=r"tunelab\[vllm\]"):
        make_backend(ServeConfig(backend="vllm")).load()


def test_llamacpp_needs_a_gguf(tmp_path):
    with pytest.raises(ModelNotFound, match="gguf"):
        gguf_path(str(tmp_path / "model.safetensors"))
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="found 2"):
        gguf_path(str(tmp_path))


def test_serve_config_rejects_bad_limits():
    with pytest.raises(ValueError, match="max_pending"):
        ServeConfig(max_pending=0)
    with pytest.raises(ConfigError, match="max_num_seqs must be a positive integer, got 0"):
        build(ServeConfig, {"max_num_seqs": 0})  # the engine's own check, through the flat key
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=70000)
