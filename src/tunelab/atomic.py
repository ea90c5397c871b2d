"""Write to a temporary sibling, then rename: readers never see a half-written file or folder.

Every writer in tunelab (store, runs, templates, data, exports, reports) goes through here,
and the small JSON files they write (status, config, templates) are read back through
`read_json_object`.

Temp names carry their owner, `.NAME.tmp-PID.START-xxxx` (START: the process start token of
`tunelab.process`), so whatever a killed process left behind can be told from work in progress
and swept by the next writer (`sweep_dead`), even after the PID was reused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


_OWNED = re.compile(r"\.tmp-(\d+)\.(\w+)-[^/]*$")


def owned_prefix(name: str) -> str:
    """The start of a temp name owned by this process: `.NAME.tmp-PID.START-`."""
    from tunelab import process

    me = process.owner()
    return f".{name}.tmp-{me['pid']}.{me['pid_start'] or 0}-"


def owner_alive(path: Path) -> bool:
    """False only for a temp name whose owning process is known to be gone."""
    from tunelab import process

    m = _OWNED.search(Path(path).name)
    if m is None:
        return True  # not ours: never touched
    start = None if m.group(2) == "0" else m.group(2)
    return process.owner_alive({"pid": int(m.group(1)), "pid_start": start})


def dead_leftovers(folder: Path, pattern: str = ".*.tmp-*") -> list[Path]:
    """Temp files and folders in `folder` whose owner is gone."""
    try:
        return [p for p in Path(folder).glob(pattern) if not owner_alive(p)]
    except OSError:
        return []


def sweep_dead(folder: Path, pattern: str = ".*.tmp-*") -> int:
    """Remove what killed writers left in `folder`; returns the bytes freed."""
    freed = 0
    for path in dead_leftovers(folder, pattern):
        freed += disk_bytes(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


def disk_bytes(path: Path) -> int:
    """Bytes in a file, or in the files under a folder (0 if it vanished meanwhile)."""
    path = Path(path)
    try:
        if not path.is_dir():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temp dir beside `out`; on success it replaces `out`, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead(out.parent, f".{out.name}.tmp-*")
    tmp = make_temp_dir(out.parent, out.name)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(owned_prefix(out.name) + "old")
    if out.exists():
        os.replace(out, old)  # a directory cannot be replaced in one step; keep the window tiny
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a temp path beside `out`; on success it is renamed onto `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead(out.parent, f".{out.name}.tmp-*")
    fd, name = tempfile.mkstemp(prefix=owned_prefix(out.name), dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; exports are meant to be shared
    os.replace(tmp, out)


def make_temp_dir(parent: Path, name: str) -> Path:
    """A fresh owner-tagged temp dir in `parent` with the user's normal permissions (umask), not
    mkdtemp's 0700: it is renamed into place as an adapter, a merged model, an export or a store model."""
    tmp = Path(tempfile.mkdtemp(prefix=owned_prefix(name), dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it,
    and setting it to 0 even for a moment would leak world-writable files from other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
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
