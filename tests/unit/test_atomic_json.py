"""`read_json_object`: tolerant for files other processes rewrite, strict with an error naming the file."""

from __future__ import annotations

import pytest

from tunelab.atomic import read_json_object
from tunelab.errors import CorruptModelFile


@pytest.mark.parametrize("content", [None, "{half", "[1, 2]", "\udcff"])
def test_tolerant_read_gives_an_empty_object(tmp_path, content):
    path = tmp_path / "status.json"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert read_json_object(path) == {}


def test_strict_read_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path, CorruptModelFile) == {"a": 1}
    path.write_text("{oops")
    with pytest.raises(CorruptModelFile, match=r"config\.json: cannot read JSON"):
        read_json_object(path, CorruptModelFile)
    path.write_text("[]")
    with pytest.raises(CorruptModelFile, match=r"config\.json: expected a JSON object"):
        read_json_object(path, CorruptModelFile)
    with pytest.raises(CorruptModelFile, match=r"missing\.json: cannot read JSON"):
        read_json_object(tmp_path / "missing.json", CorruptModelFile)
