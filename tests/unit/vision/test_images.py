"""Image references: data URLs, paths next to the data file, refusals and unreadable files."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tunelab.data.errors import DataError
from tunelab.vision.images import load_rgb, resolve_image, split_image_parts


def png_bytes(colour=(255, 0, 0), size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def data_url(colour=(255, 0, 0), size=(8, 6)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(colour, size)).decode()


def test_a_data_url_decodes_to_its_pixels():
    ref = resolve_image(data_url((0, 0, 255), (5, 7)), "d.jsonl", 3, "images[0]")
    image = load_rgb(ref)
    assert image.size == (5, 7) and image.getpixel((2, 2)) == (0, 0, 255)


def test_a_relative_path_resolves_next_to_the_data_file(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    monkeypatch.chdir(tmp_path.parent)
    ref = resolve_image("img/a.png", str(tmp_path / "d.jsonl"), 1, "images[0]")
    assert ref == str((tmp_path / "img" / "a.png").resolve())
    assert resolve_image("file://" + ref, "d.jsonl", 1, "images[0]") == ref


def test_a_missing_image_names_file_line_and_field(tmp_path):
    with pytest.raises(DataError, match=r"d\.jsonl:4: field 'images\[1\]': image file not found") as err:
        resolve_image("nope.png", str(tmp_path / "d.jsonl"), 4, "images[1]")
    assert err.value.reason == "missing image"


def test_an_unreadable_image_names_file_line_and_field(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'images\[0\]': cannot read image") as err:
        resolve_image("bad.png", str(tmp_path / "d.jsonl"), 2, "images[0]")
    assert err.value.reason == "unreadable image"
    with pytest.raises(DataError, match="bad base64"):
        resolve_image("data:image/png;base64,@@@", "d.jsonl", 2, "x")


def test_remote_urls_are_refused():
    with pytest.raises(DataError, match="remote image URL.*refused") as err:
        resolve_image("https://example.com/cat.png", "d.jsonl", 9, "messages[0].content[1].image_url.url")
    assert err.value.reason == "remote image" and err.value.line == 9


def test_image_parts_become_markers_in_order():
    parts = [{"type": "text", "text": "what colour? "}, {"type": "image_url", "image_url": {"url": "a.png"}},
             {"type": "image", "image": "b.png"}]
    value, refs = split_image_parts(parts, "messages[0].content", "d.jsonl", 1)
    assert [p["text"] for p in value] == ["what colour? ", "<image>", "<image>"]
    assert refs == [("a.png", "messages[0].content[1].image_url.url"), ("b.png", "messages[0].content[2].image")]
    with pytest.raises(DataError, match=r"content\[0\]\.type.*'audio'"):
        split_image_parts([{"type": "audio"}], "messages[0].content", "d.jsonl", 1)


def test_without_pillow_an_image_names_the_extra_to_install(tmp_path, monkeypatch):
    import sys

    from tunelab.errors import MissingExtra
    from tunelab.vision.images import open_image

    path = tmp_path / "red.png"
    Image.new("RGB", (4, 4), "red").save(path)
    monkeypatch.setitem(sys.modules, "PIL", None)  # what an install without the extra looks like
    with pytest.raises(MissingExtra, match=r"data\.jsonl:3.*tunelab\[vision\]"):
        open_image(str(path), "data.jsonl", 3, "images[0]")
