"""Writing into the store without ever leaving half a model behind.

Every pull builds the model in a fresh temp dir under $TUNELAB_HOME/tmp (same
filesystem as the store), then renames it into place. Any failure removes the
temp dir; a full disk becomes a one-line `DiskFull` error. Other temporary work
(an export's merged model) lives there too (`work_dir`). Temp dirs are tagged with
their owning process, so what a killed command left is swept by the next one.

All bulk bytes go through `write_all`, a thin wrapper over `os.write`: the one
place where the operating system can say "no space left on device".
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tunelab.atomic import dead_leftovers, disk_bytes, sweep_dead
from tunelab.errors import DiskFull
from tunelab.store.index import Store, safe_dir_name

CHUNK = 16 << 20  # copy in 16 MiB pieces: big enough to be fast, small enough for RAM


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to the file descriptor `fd` (os.write may write less)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file through `write_all`, following symlinks (hub caches use them)."""
    with naming(dst), open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            write_all(fout.fileno(), chunk)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Attach `path` to an OSError raised by a bare `os.write`, so the error can name the file."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a small text file through `write_all`."""
    with naming(path), open(path, "wb") as f:
        write_all(f.fileno(), text.encode("utf-8"))


def sweep_leftovers(store: Store, say: Callable[[str], None] | None = None) -> int:
    """Remove temp dirs under the store's tmp/ whose process is gone; say and return the bytes."""
    freed = sweep_dead(store.tmp_dir)
    if freed and say:
        say(f"removed {_human(freed)} left in {store.tmp_dir} by killed commands")
    return freed


def leftover_bytes(store: Store) -> int:
    """Bytes under the store's tmp/ left by killed commands (for `tunelab list`)."""
    return sum(disk_bytes(p) for p in dead_leftovers(store.tmp_dir))


@contextmanager
def work_dir(store: Store, name: str, say: Callable[[str], None] | None = None) -> Iterator[Path]:
    """A scratch dir under the store's tmp/ for one command; always removed afterwards."""
    sweep_leftovers(store, say)
    tmp = store.new_tmp_dir(name)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged(store: Store, name: str, say: Callable[[str], None] | None = None) -> Iterator[Path]:
    """A temp dir for building model `name`; removed if the block fails.

    On success the caller must have moved the dir away (see `publish`).
    """
    sweep_leftovers(store, say)
    tmp = store.new_tmp_dir(safe_dir_name(name))
    try:
        yield tmp
    except OSError as err:
        if err.errno == errno.ENOSPC:
            where = getattr(err, "filename", None) or tmp
            raise DiskFull(
                f"disk full while writing {where}; nothing was added to the store "
                f"(free some space under {store.home} and pull again)"
            ) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, final: Path) -> None:
    """Move a finished model dir into place atomically, replacing an orphaned dir."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # left by a crash after the rename but before the index entry
        shutil.rmtree(final)
    os.replace(tmp, final)


def dir_size(path: Path) -> int:
    """Bytes used by the regular files under `path`."""
    return disk_bytes(path)


def _human(n: int) -> str:
    from tunelab.store.describe import human_bytes

    return human_bytes(n)
