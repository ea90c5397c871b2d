"""Outputs (adapters, merged models, exports, store models) get the user's umask, not 0700/0600."""

from __future__ import annotations

import os
import stat

import pytest

from tunelab.atomic import atomic_dir, atomic_file, write_text_atomic
from tunelab.store.index import Store


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_dir_and_file_follow_the_umask(tmp_path, umask):
    with atomic_dir(tmp_path / "adapter") as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
    with atomic_file(tmp_path / "model.gguf") as tmp:
        tmp.write_bytes(b"GGUF")
    assert _mode(tmp_path / "adapter") == 0o777 & ~umask
    assert _mode(tmp_path / "adapter" / "weights.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "model.gguf") == 0o666 & ~umask
    assert _mode(write_text_atomic(tmp_path / "eval.json", "{}")) == 0o666 & ~umask


def test_store_temp_dirs_become_models_with_normal_permissions(tmp_path, umask):
    tmp = Store(tmp_path / "home").new_tmp_dir("pull")
    assert _mode(tmp) == 0o777 & ~umask
