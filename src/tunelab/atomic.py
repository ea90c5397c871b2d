"""Write to a temporary sibling, then rename: readers never see a half-written file or folder.

Every writer in tunelab (store, runs, templates, data, exports, reports) goes through here,
and the small JSON files they write (status, config, templates) are read back through
`read_json_object`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out`, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)  # a directory cannot be replaced in one step; keep the window tiny
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a temp path beside `out`; on success it is renamed onto `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; exports are meant to be shared
    os.replace(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file and a rename; return the path."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_json_object(path: Path, error: type[Exception] | None = None) -> dict:
    """The JSON object in `path`.

    error=None: {} when the file is missing, unreadable, not JSON or not an object (a status file
    another process may be replacing). Otherwise `error` is raised, naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad UTF-8 or bad JSON
        if error is None:
            return {}
        raise error(f"{path}: cannot read JSON ({err})") from None
    if isinstance(data, dict):
        return data
    if error is None:
        return {}
    raise error(f"{path}: expected a JSON object")
