"""Serving the tiny Qwen2.5-VL with images through the official openai and ollama clients: the reply is
the engine's own greedy output for the same image; /api/show says `vision` only for the VLM; images to
a text-only model, remote URLs and non-images are 400s naming the image."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from ollama import Client, ResponseError
from PIL import Image

from serve_util import start_server

GREEDY = {"max_tokens": 6, "temperature": 0}


def _png(rgb, size=(56, 28)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


RED, BLUE = _png((220, 30, 30)), _png((30, 40, 220), (56, 56))


def _url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    from tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vl")


@pytest.fixture(scope="module")
def server(vlm):
    srv = start_server(vlm, served_name="vl", dtype="fp32")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def expected(vlm):
    """The LLM API's greedy replies (ignoring EOS, as max_tokens runs out) for each image set."""
    from tunelab.engine.llm import LLM, SamplingParams

    llm = LLM(vlm, dtype="fp32", max_model_len=256)
    params = SamplingParams(max_tokens=6, temperature=0)

    def reply(*pngs: bytes) -> str:
        parts = [{"type": "image_url", "image_url": {"url": _url(p)}} for p in pngs]
        return llm.chat([{"role": "user", "content": parts + [{"type": "text", "text": "colour?"}]}], params,
                        use_tqdm=False)[0].outputs[0].text

    return {"red": reply(RED), "blue": reply(BLUE), "both": reply(RED, BLUE)}


def test_openai_image_url_reply_is_the_engines(server, expected):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    for key, pngs in {"red": [RED], "blue": [BLUE], "both": [RED, BLUE]}.items():
        parts = [{"type": "image_url", "image_url": {"url": _url(p)}} for p in pngs]
        out = client.chat.completions.create(model="vl", messages=[{"role": "user", "content": [
            *parts, {"type": "text", "text": "colour?"}]}], **GREEDY)
        assert out.choices[0].message.content == expected[key], key
    assert expected["red"] != expected["blue"] or expected["red"] != expected["both"]  # the image is seen


def test_ollama_images_reply_is_the_engines(server, expected):
    ollama = Client(host=server.url)
    options = {"temperature": 0, "num_predict": 6}
    chat = ollama.chat(model="vl", messages=[{"role": "user", "content": "colour?", "images": [BLUE]}],
                       options=options)
    assert chat.message.content == expected["blue"]
    gen = ollama.generate(model="vl", prompt="colour?", images=[RED, BLUE], options=options)
    assert gen.response == expected["both"]
    assert "vision" in ollama.show("vl").capabilities


def test_bad_images_are_400s_naming_them(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

    def bad(url: str) -> dict:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="vl", messages=[{"role": "user", "content": [
                {"type": "text", "text": "colour?"}, {"type": "image_url", "image_url": {"url": url}}]}], **GREEDY)
        return info.value.body

    err = bad("https://example.com/cat.png")
    assert err["param"] == "messages.0.content.1" and "remote image URLs are off" in err["message"]
    err = bad("data:image/png;base64," + base64.b64encode(b"not a png").decode())
    assert err["param"] == "messages.0.content.1" and "cannot read the image" in err["message"]
    with pytest.raises(ResponseError) as info:
        Client(host=server.url).chat(model="vl", messages=[{"role": "user", "content": "?", "images": ["AAAA"]}])
    assert info.value.status_code == 400 and "messages.0.images.0" in info.value.error


def test_a_text_model_says_it_takes_no_images(tiny_models):
    srv = start_server(tiny_models["qwen2"], served_name="tiny")
    try:
        with pytest.raises(openai.BadRequestError) as info:
            openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": _url(RED)}}]}], **GREEDY)
        assert info.value.body["param"] == "messages.0.content.0" and "text only" in info.value.body["message"]
        ollama = Client(host=srv.url)
        with pytest.raises(ResponseError) as err:
            ollama.generate(model="tiny", prompt="?", images=[RED])
        assert err.value.status_code == 400 and "images.0" in err.value.error and "text only" in err.value.error
        assert "vision" not in ollama.show("tiny").capabilities
    finally:
        srv.stop()


@pytest.mark.parametrize("family", ["gemma3", "qwen3_vl"])
def test_other_families_image_url_reply_is_the_engines(family, tmp_path_factory):
    """The tiny Gemma 3 VLM and Qwen3-VL: an OpenAI image_url and Ollama's images get the LLM API's greedy replies."""
    import tiny_vlm

    from tunelab.engine.llm import LLM, SamplingParams

    build = {"gemma3": tiny_vlm.build_tiny_gemma3_vlm, "qwen3_vl": tiny_vlm.build_tiny_qwen3_vl}[family]
    model = build(tmp_path_factory.mktemp("vlm") / family)
    llm = LLM(model, dtype="fp32", max_model_len=256)
    turn = [{"type": "image_url", "image_url": {"url": _url(BLUE)}}, {"type": "text", "text": "colour?"}]
    want = llm.chat([{"role": "user", "content": turn}], SamplingParams(max_tokens=6, temperature=0),
                    use_tqdm=False)[0].outputs[0].text
    srv = start_server(model, served_name="g3", dtype="fp32")
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        out = client.chat.completions.create(model="g3", messages=[{"role": "user", "content": turn}], **GREEDY)
        assert out.choices[0].message.content == want
        ollama = Client(host=srv.url)
        chat = ollama.chat(model="g3", messages=[{"role": "user", "content": "colour?", "images": [BLUE]}],
                           options={"temperature": 0, "num_predict": 6})
        assert chat.message.content == want
        assert "vision" in ollama.show("g3").capabilities
    finally:
        srv.stop()
