"""Serving the tiny Qwen2.5-VL with images through the official openai, ollama and anthropic clients (chat,
Responses, Ollama, Messages): the reply is the engine's own greedy output for the same image; /api/show says
`vision` only for the VLM; images to a text-only model, remote URLs and non-images are 400s naming the image;
images are decoded off the event loop."""

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


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def test_anthropic_image_blocks_reply_is_the_engines(server, expected):
    anthropic = pytest.importorskip("anthropic", reason="the anthropic client is not installed")
    client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)
    for key, pngs in {"blue": [BLUE], "both": [RED, BLUE]}.items():
        blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _b64(p)}}
                  for p in pngs]
        messages = [{"role": "user", "content": [*blocks, {"type": "text", "text": "colour?"}]}]
        out = client.messages.create(model="vl", max_tokens=6, extra_body={"temperature": 0}, messages=messages)
        assert "".join(b.text for b in out.content if b.type == "text") == expected[key], key
        assert client.messages.count_tokens(model="vl", messages=messages).input_tokens == out.usage.input_tokens
    assert out.usage.input_tokens > client.messages.count_tokens(model="vl", messages=[  # images take tokens
        {"role": "user", "content": "colour?"}]).input_tokens + 2
    with pytest.raises(anthropic.BadRequestError) as info:  # a URL source: the server fetches nothing
        client.messages.create(model="vl", max_tokens=6, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}])
    assert info.value.body["error"]["message"].startswith("messages.0.content.0: remote image URLs are off")


def test_responses_input_image_reply_is_the_engines(server, expected):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    for key, pngs in {"red": [RED], "both": [RED, BLUE]}.items():
        parts = [{"type": "input_image", "image_url": _url(p), "detail": "auto"} for p in pngs]
        out = client.responses.create(model="vl", max_output_tokens=6, temperature=0, input=[
            {"role": "user", "content": [*parts, {"type": "input_text", "text": "colour?"}]}])
        assert out.output_text == expected[key], key
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="vl", max_output_tokens=6, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}]}])
    assert info.value.body["param"] == "input.0.content.0" and "remote image URLs" in info.value.body["message"]


def test_images_are_decoded_off_the_event_loop(vlm, expected):
    """serve/images.encode_chat and the engine's image inputs run on worker threads: a ticker task on the
    same loop runs while they work (it could not while a synchronous call held the loop), and the reply is
    still the engine's."""
    import asyncio

    from tunelab.config import build
    from tunelab.engine.config import SamplingParams
    from tunelab.serve.backends import make_backend
    from tunelab.serve.config import ServeConfig
    from tunelab.serve.images import encode_chat
    from tunelab.serve.service import Service

    cfg = build(ServeConfig, {"model": str(vlm), "dtype": "fp32"})
    backend = make_backend(cfg)
    backend.load()
    queued = backend.engine.engine  # total_prompt_tokens grows when a request is queued

    async def run() -> tuple[list[int], int, int, str]:
        seen: list[int] = []

        async def tick():
            while True:
                seen.append(queued.total_prompt_tokens)
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        start = len(seen)
        prompt = await encode_chat(Service(backend, cfg), [{"role": "user", "content": "<image>colour?"}], {},
                                   None, [(_url(BLUE), "messages.0.content.0")])
        during_encode, before, text = len(seen) - start, queued.total_prompt_tokens, ""
        start = len(seen)
        async for delta in backend.generate("r", prompt.ids, SamplingParams(max_tokens=6, temperature=0),
                                            None, prompt.images):
            text += delta.text
        ticker.cancel()
        return seen[start:], during_encode, before, text

    try:
        seen, during_encode, before, text = asyncio.run(run())
    finally:
        backend.close()
    assert during_encode > 0  # the loop ran while the image was checked and decoded
    assert seen[0] == before  # ... and while the engine built its pixels, before the request was queued
    assert text == expected["blue"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 100 MP image: refused anyway
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
    for side in (10_000, 14_000):  # a small 1-bit PNG that unpacks to 100 or 196 million pixels
        buf = io.BytesIO()
        Image.new("1", (side, side)).save(buf, format="PNG")
        err = bad(_url(buf.getvalue()))
        assert err["param"] == "messages.0.content.1" and "pixels the server decodes" in err["message"]
    with pytest.raises(openai.BadRequestError) as info:  # the text may not hold the marker images take
        client.chat.completions.create(model="vl", messages=[{"role": "user", "content": [
            {"type": "text", "text": "is <image> a tag?"}, {"type": "image_url", "image_url": {"url": _url(RED)}}]}],
            **GREEDY)
    assert info.value.body["param"] == "messages" and "'<image>'" in info.value.body["message"]
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
