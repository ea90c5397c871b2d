"""Images in served chat requests: found in the messages and checked before the prompt is built.

OpenAI's `image_url` content parts (data URLs) and Ollama's `images` (base64, per message) become
`<image>` markers in the message text (vision/images.IMAGE_MARKER) and one data URL each, in
order; the backend's `encode_chat` expands the markers to the model's image tokens and decodes the
images. A 400 names the first image when the served model takes none, and any image that is a
remote URL (the server fetches nothing), a file path (it reads no local files for a client), or
bytes that are not an image.
"""

from __future__ import annotations

from typing import Any

from tunelab.data.errors import DataError  # first: tunelab.data imports vision.images itself
from tunelab.serve import protocol as P
from tunelab.serve.backends.base import Prompt
from tunelab.serve.errors import bad_request
from tunelab.vision.images import IMAGE_MARKER, open_image

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


def encode_chat(svc: Any, messages: list[dict], kwargs: dict[str, Any], adapter: str | None,
                refs: list[Ref]) -> Prompt:
    """`svc.backend.encode_chat`, with the images checked and handed over when there are any."""
    if not refs:
        return svc.backend.encode_chat(messages, kwargs, adapter)
    if not svc.backend.takes_images():
        raise bad_request(f"{refs[0][1]}: {TEXT_ONLY}", param=refs[0][1])
    for url, param in refs:
        check_image(url, param)
    return svc.backend.encode_chat(messages, kwargs, adapter, images=[url for url, _ in refs])


def check_image(url: str, param: str) -> None:
    """A 400 naming `param` (in the message too: Ollama's errors have no param) unless `url` is a
    base64 data URL holding an image."""
    if url.startswith(("http://", "https://")):
        raise bad_request(f"{param}: remote image URLs are off: send the image as a base64 data URL "
                          "(data:image/png;base64,...)", param=param)
    if not url.startswith("data:"):
        raise bad_request(f"{param}: an image must be a base64 data URL (data:image/png;base64,...); the "
                          "server reads no local files", param=param)
    try:
        open_image(url).close()
    except DataError:
        raise bad_request(f"{param}: cannot read the image: not base64 of a PNG, JPEG, WebP, GIF or other "
                          "image file PIL reads", param=param) from None
