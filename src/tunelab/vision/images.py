"""Image references in data rows: collect them, resolve them, open them.

A row's images live in two places, by format:
- OpenAI messages: content parts `{"type": "image_url", "image_url": {"url": ...}}` (or Qwen's
  `{"type": "image", "image": ...}`); each part becomes an `<image>` marker in the text, in order.
- LLaMA-Factory: an `images` column (a list of paths) with one `<image>` marker per image in the turns.

A reference is a data URL (`data:image/png;base64,...`), a `file://` URL or a local path (as given,
else relative to the data file's folder, as LLaMA-Factory's media_dir defaults to the data folder).
Remote (http/https) URLs are refused: training data must not depend on the network.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from tunelab.data.errors import DataError
from tunelab.errors import MissingExtra

IMAGE_MARKER = "<image>"
TOO_LARGE = "image too large"  # DataError.reason of an image over PIL's decompression-bomb limit
_REMOTE = ("http://", "https://")


def split_image_parts(value: Any, key: str, source: str, line: int) -> tuple[Any, list[tuple[str, str]]]:
    """A message content with image parts replaced by `<image>` text parts, and (reference, field) of each."""
    if not (isinstance(value, list) and all(isinstance(p, dict) for p in value)):
        return value, []
    parts, refs = [], []
    for i, part in enumerate(value):
        kind = part.get("type", "text")
        if kind == "text":
            parts.append(part)
        elif kind in ("image_url", "image"):
            refs.append(_part_ref(part, kind, f"{key}[{i}]", source, line))
            parts.append({"type": "text", "text": IMAGE_MARKER})
        else:
            raise DataError("wrong type", f"content part type {kind!r} is not supported; use text, image_url "
                            "or image", source, line, f"{key}[{i}].type")
    return parts, refs


def _part_ref(part: dict, kind: str, where: str, source: str, line: int) -> tuple[str, str]:
    """(reference, field) of one image part."""
    value = part.get(kind)
    if kind == "image_url" and isinstance(value, dict):
        value, where = value.get("url"), f"{where}.image_url.url"
    else:
        where = f"{where}.{kind}"
    if not isinstance(value, str) or not value:
        raise DataError("missing image", "an image part needs a URL or path string", source, line, where)
    return value, where


def read_image_column(value: Any, key: str, source: str, line: int) -> list[str]:
    """LLaMA-Factory's `images` column: a list of path strings (a single string is one image)."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise DataError("wrong type", "expected a list of image paths", source, line, key)
    return list(values)


def check_markers(messages: list[dict], images: list, key: str, source: str, line: int) -> None:
    """One `<image>` marker in the turns per image, as LLaMA-Factory's mm_plugin requires."""
    markers = sum(m["content"].count(IMAGE_MARKER) for m in messages if isinstance(m.get("content"), str))
    if markers != len(images):
        raise DataError("image markers", f"{len(images)} images but {markers} {IMAGE_MARKER} markers in the "
                        "turns; put one marker where each image goes", source, line, key)


def resolve_image(ref: str, source: str, line: int, field: str) -> str:
    """A checked reference: a data URL as it is, a path made absolute; opens it to prove it is an image."""
    if ref.startswith(_REMOTE):
        raise DataError("remote image", f"remote image URL {ref[:60]!r} refused: download it and give a local "
                        "path or a data URL", source, line, field)
    if not ref.startswith("data:"):
        ref = str(_local_path(ref, source, line, field))
    image = open_image(ref, source, line, field)
    image.close()
    return ref


def _local_path(ref: str, source: str, line: int, field: str) -> Path:
    """The file a path or file:// URL names: as given, else next to the data file."""
    path = Path(ref[len("file://"):] if ref.startswith("file://") else ref).expanduser()
    candidates = [path] if path.is_absolute() else [path, Path(source).parent / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = " or ".join(str(c) for c in candidates)
    raise DataError("missing image", f"image file not found (tried {tried})", source, line, field)


def open_image(ref: str, source: str = "", line: int = 0, field: str = ""):
    """A PIL image (lazily decoded) from a resolved reference; DataError when it is not an image."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingExtra("pillow", "vision", f"the image at {source}:{line} ({field})") from None
    try:
        data = io.BytesIO(_data_url_bytes(ref)) if ref.startswith("data:") else ref
        image = Image.open(data)
        image.verify()  # checks the file's structure; verify() leaves the image unusable, so reopen
        if isinstance(data, io.BytesIO):
            data.seek(0)
        return Image.open(data)
    except Image.DecompressionBombError as err:  # a small file that unpacks to more pixels than memory holds
        raise DataError(TOO_LARGE, f"cannot read image: {err}", source, line, field) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        what = "data URL" if ref.startswith("data:") else ref
        raise DataError("unreadable image", f"cannot read image {what[:80]}: {err}", source, line, field) from None


def _data_url_bytes(ref: str) -> bytes:
    """The bytes of a base64 data URL."""
    header, sep, payload = ref.partition(",")
    if not sep or ";base64" not in header:
        raise ValueError("only base64 data URLs (data:image/...;base64,...) are supported")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"bad base64 payload ({err})") from None


def load_rgb(ref: str):
    """The decoded RGB image of a resolved reference (what the processor receives)."""
    image = open_image(ref)
    return image.convert("RGB")
