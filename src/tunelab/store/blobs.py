"""Uploaded blobs: files the ollama client sends before `create` (`POST /api/blobs/sha256:HEX`).

Each is kept under $TUNELAB_HOME/blobs/sha256-HEX, written through a temp file and renamed into
place only once its bytes hash to the digest it was sent under. `staged` lays a create
request's `{file name: digest}` out as a directory of those names (hard links, so nothing is
copied twice), which `create_model` then reads as a GGUF, a model dir or a PEFT adapter.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from tunelab.atomic import atomic_file, make_temp_dir
from tunelab.errors import InvalidRequest
from tunelab.store.index import tunelab_home

DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")


def blobs_dir() -> Path:
    return tunelab_home() / "blobs"


def blob_path(digest: str, param: str = "digest") -> Path:
    """Where blob `digest` ('sha256:' and 64 hex digits) lives; a 400 naming it when malformed."""
    match = DIGEST.match(digest)
    if match is None:
        raise InvalidRequest(f"{param}: '{digest}' is not a digest of the form sha256:<64 hex digits>",
                             param=param)
    return blobs_dir() / f"sha256-{match.group(1).lower()}"


def has_blob(digest: str) -> bool:
    return blob_path(digest).is_file()


def write_blob(digest: str, chunks: Iterable[bytes]) -> bool:
    """Store `chunks` as blob `digest`, streamed to disk; False when it was already there.

    Raises InvalidRequest (nothing kept) when the bytes hash to another digest."""
    path = blob_path(digest)
    if path.is_file():
        return False
    sha = hashlib.sha256()
    with atomic_file(path) as tmp, open(tmp, "wb") as out:
        for chunk in chunks:
            sha.update(chunk)
            out.write(chunk)
        if sha.hexdigest() != path.name.removeprefix("sha256-"):
            raise InvalidRequest(f"digest mismatch: the body hashes to sha256:{sha.hexdigest()}, "
                                 f"not {digest}", param="digest")
    return True


@contextmanager
def staged(files: dict[str, str], param: str) -> Iterator[Path]:
    """A temp dir holding each uploaded blob under its file name; removed afterwards."""
    check_uploaded(files, param)
    blobs_dir().mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(blobs_dir(), "staged")
    try:
        for name, digest in files.items():
            src, dest = blob_path(digest), tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link(src, dest)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_uploaded(files: dict[str, str], param: str) -> None:
    """Each name a plain relative file name, each digest well formed and already uploaded."""
    for name, digest in files.items():
        if not name or name.startswith("/") or "\\" in name or ".." in Path(name).parts:
            raise InvalidRequest(f"{param}: '{name}' is not a plain relative file name", param=param)
        if not blob_path(digest, param=f"{param}.{name}").is_file():
            raise InvalidRequest(f"{param}.{name}: blob {digest} was not uploaded "
                                 f"(POST /api/blobs/{digest} first)", param=param)


def upload_kind(files: dict[str, str], param: str) -> str:
    """What uploaded `files` make: 'gguf' (one .gguf file), 'model' (a model dir: config.json and
    its weights), or 'adapter' (a PEFT adapter: adapter_config.json and its weights)."""
    names = sorted(files)
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if ggufs and (len(names) > 1 or param == "adapters"):
        raise InvalidRequest(f"{param}: a GGUF is served alone as a model (FROM), never with other files "
                             f"or as an adapter; got {names}", param=param)
    if ggufs:
        return "gguf"
    need = "adapter_config.json" if param == "adapters" else "config.json"
    if need not in names:
        raise InvalidRequest(f"{param}: no {need} among {names}; give one .gguf file, a model dir's "
                             "config.json, weights and tokenizer files, or a PEFT adapter's files", param=param)
    return "adapter" if param == "adapters" else "model"


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or no hard links there
        shutil.copyfile(src, dest)
