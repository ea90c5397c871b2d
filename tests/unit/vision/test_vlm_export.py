"""GGUF export of a vision-language model is refused before anything is written (no mmproj yet)."""

from __future__ import annotations

import pytest

from tunelab.export.errors import ExportError
from tunelab.export.exporter import export


def test_gguf_export_of_a_vlm_is_refused_before_writing(tiny_vlm, tmp_path):
    dest = tmp_path / "out" / "vlm.gguf"
    with pytest.raises(ExportError, match=r"config\.json: qwen2_5_vl is a vision-language model; .*mmproj"):
        export(str(tiny_vlm), "gguf", "q8_0", out=dest, log=lambda _m: None)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())
