"""Rows with images: OpenAI image parts and LLaMA-Factory's `images` column, through the data owners."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tunelab.data.errors import DataError
from tunelab.data.formats import read_datasets


def write_png(path, colour=(255, 0, 0), size=(56, 84)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def openai_row(url, answer="red"):
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "colour?"}]},
                         {"role": "assistant", "content": answer}]}


def test_openai_image_parts_become_markers_and_resolved_images(tmp_path):
    write_png(tmp_path / "img" / "r.png")
    path = jsonl(tmp_path / "d.jsonl", [openai_row("img/r.png")])
    (row,) = read_datasets([path]).rows
    assert row.messages[0] == {"role": "user", "content": "<image>colour?"}
    assert row.images == [str((tmp_path / "img" / "r.png").resolve())]


def test_a_missing_image_part_is_an_error_with_file_line_and_field(tmp_path):
    write_png(tmp_path / "r.png")
    path = jsonl(tmp_path / "d.jsonl", [openai_row("r.png"), openai_row("gone.png")])
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'messages\[0\]\.content\[0\]\.image_url\.url': "
                                        "image file not found"):
        read_datasets([path])
    loaded = read_datasets([path], skip_invalid=True)
    assert len(loaded.rows) == 1 and loaded.rejected == {"missing image": [(str(path), 2)]}


def test_llamafactory_images_column_and_dataset_info(tmp_path):
    write_png(tmp_path / "data" / "mllm_demo_data" / "1.jpg")
    rows = [{"messages": [{"role": "user", "content": "<image>Who are they?"},
                          {"role": "assistant", "content": "Players."}], "images": ["mllm_demo_data/1.jpg"]},
            {"messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "No one."}],
             "images": ["mllm_demo_data/1.jpg"]}]
    (tmp_path / "data" / "mllm.json").write_text("[\n" + ",\n".join(map(json.dumps, rows)) + "\n]")
    info = {"mllm_demo": {"file_name": "mllm.json", "formatting": "sharegpt",
                          "columns": {"messages": "messages", "images": "images"},
                          "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                   "assistant_tag": "assistant"}}}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(info))
    loaded = read_datasets([tmp_path / "data" / "dataset_info.json"], skip_invalid=True)
    (row,) = loaded.rows
    assert row.images == [str((tmp_path / "data" / "mllm_demo_data" / "1.jpg").resolve())]
    assert row.messages[0]["content"] == "<image>Who are they?"
    assert loaded.rejected == {"image markers": [(str(tmp_path / "data" / "mllm.json"), 3)]}


def test_an_images_column_in_a_text_only_format_is_an_unknown_column(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c", "images": ["a.png"]}])
    with pytest.raises(DataError, match="field 'images': unknown column; prompt_completion rows"):
        read_datasets([path])


def test_data_check_reports_images_tokens_and_missing_ones(tmp_path, tokenizer, tiny_tokenizer_dir):
    from tunelab.data.check import check_data, format_report
    from tunelab.data.config import DataConfig
    from tunelab.data.templates import ChatTemplate

    write_png(tmp_path / "a.png", size=(56, 84))  # 2 x 3 merged tokens
    write_png(tmp_path / "b.png", size=(280, 280))
    path = jsonl(tmp_path / "d.jsonl", [openai_row("a.png"), openai_row("b.png", "blue"), openai_row("c.png"),
                                        {"messages": [{"role": "user", "content": "<image>?"},
                                                      {"role": "assistant", "content": "x"}],
                                         "images": ["bad.png"]}])
    (tmp_path / "bad.png").write_text("not an image")
    report = check_data([path], ChatTemplate.for_model(tiny_tokenizer_dir), tokenizer, DataConfig())
    assert report.image_tokens == [6, 100]  # (56/28)*(84/28) and (280/28)^2
    text = format_report(report)
    assert "images: 2 in 2 rows" in text and "106 in all" in text
    assert f"missing image: 1 (first at {path}:3)" in text
    assert f"unreadable image: 1 (first at {path}:4)" in text
