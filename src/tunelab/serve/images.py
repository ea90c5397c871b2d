"""Images in served chat requests: found in the messages and checked before the prompt is built.

Every route translates its image parts at the edge into `<image>` markers in the message text
(vision/images.IMAGE_MARKER) and one (URL, request path) ref each, in order: OpenAI's `image_url`
parts, Ollama's `images` (base64, per message), Anthropic's `image` blocks (anthropic_protocol) and
the Responses API's `input_image` parts (responses_protocol). `encode_chat` then checks the refs and
has the backend expand the markers to the model's image tokens and decode the images -- on a worker
thread, as decoding a large image would stall every request on the event loop. A 400 names the first
image when the served model takes none, and any image that is a remote URL (the server fetches
nothing), a file path (it reads no local files for a client), bytes that are not an image, or more
pixels than PIL's decompression-bomb limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tunelab.data.errors import DataError  # first: tunelab.data imports vision.images itself
from tunelab.serve import protocol as P
from tunelab.serve.backends.base import Prompt
from tunelab.serve.errors import bad_request
from tunelab.vision.images import IMAGE_MARKER, TOO_LARGE, open_image

TEXT_ONLY = "this model serves text only; images are not supported"

Ref = tuple[str, str]  # (data URL, request path naming it)


def part_text(part: P.ContentPart) -> str:
    """A content part's text in the prompt: its text, or the marker where an image goes."""
    return IMAGE_MARKER if part.type == "image_url" else part.text or ""


def openai_refs(messages: list[P.ChatMessage]) -> list[Ref]:
    """The image_url parts of OpenAI messages, in order."""
    return [(p.image_url.url, f"messages.{i}.content.{j}") for i, m in enumerate(messages)
            if isinstance(m.content, list) for j, p in enumerate(m.content) if p.type == "image_url"]


def ollama_refs(messages: list[P.OllamaMessage]) -> list[Ref]:
    """Ollama's base64 `images` of each message as data URLs, in order."""
    return [(f"data:image;base64,{b64}", f"messages.{i}.images.{j}") for i, m in enumerate(messages)
            for j, b64 in enumerate(m.images or ())]


def with_ollama_markers(content: str, images: list[str] | None) -> str:
    """An Ollama turn's text with one `<image>` marker per image before it (Ollama puts images first)."""
    return IMAGE_MARKER * len(images or ()) + content


async def encode_chat(svc: Any, messages: list[dict], kwargs: dict[str, Any], adapter: str | None,
                      refs: list[Ref]) -> Prompt:
    """`svc.backend.encode_chat`, with the images checked and handed over when there are any (then on a
    worker thread: decoding them is CPU work the event loop must not wait on)."""
    if not refs:
        return svc.backend.encode_chat(messages, kwargs, adapter)
    if not svc.backend.takes_images():
        raise bad_request(f"{refs[0][1]}: {TEXT_ONLY}", param=refs[0][1])
    check_markers(messages, refs)
    return await asyncio.to_thread(_encode_with_images, svc.backend, messages, kwargs, adapter, refs)


def _encode_with_images(backend: Any, messages: list[dict], kwargs: dict[str, Any], adapter: str | None,
                        refs: list[Ref]) -> Prompt:
    for url, param in refs:
        check_image(url, param)
    return backend.encode_chat(messages, kwargs, adapter, images=[url for url, _ in refs])


def check_markers(messages: list[dict], refs: list[Ref]) -> None:
    """A 400 when the text itself holds `<image>`: with images it would be read as where one goes."""
    markers = sum(m["content"].count(IMAGE_MARKER) for m in messages if isinstance(m.get("content"), str))
    if markers != len(refs):
        field = refs[0][1].split(".")[0]
        raise bad_request(f"{field}: the text holds '{IMAGE_MARKER}', which marks where an image goes; with "
                          "images in the request, write it another way", param=field)


def check_image(url: str, param: str) -> None:
    """A 400 naming `param` (in the message too: Ollama's errors have no param) unless `url` is a
    base64 data URL holding an image of at most `_max_pixels()` pixels."""
    if url.startswith(("http://", "https://")):
        raise bad_request(f"{param}: remote image URLs are off: send the image as a base64 data URL "
                          "(data:image/png;base64,...)", param=param)
    if not url.startswith("data:"):
        raise bad_request(f"{param}: an image must be a base64 data URL (data:image/png;base64,...); the "
                          "server reads no local files", param=param)
    try:
        with open_image(url) as image:  # the header only: the pixels are decoded once, later
            too_large = image.width * image.height > _max_pixels()
    except DataError as err:
        too_large = err.reason == TOO_LARGE  # over twice the bound: PIL refuses to open it
        if not too_large:
            raise bad_request(f"{param}: cannot read the image: not base64 of a PNG, JPEG, WebP, GIF or other "
                              "image file PIL reads", param=param) from None
    if too_large:
        raise bad_request(f"{param}: the image has more than the {_max_pixels()} pixels the server decodes; "
                          "send it smaller (the model sees it resized anyway)", param=param)


def _max_pixels() -> int:
    """PIL's decompression-bomb warning bound: a small file may unpack to more pixels than memory holds."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS or 2**62
