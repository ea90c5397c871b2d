"""Is a recorded process still the one we recorded? PID plus start time, so a reused PID is a stranger.

A writer records `owner()` (pid, start token, host); a reader asks `owner_alive(record)` and may
`signal_owner(record, sig)`. A PID alone is not enough: once the process dies the kernel hands its
number to the next process, and signalling that one would hit a stranger. The start token is field
22 of /proc/PID/stat (start time in clock ticks since boot); without /proc, `ps -o lstart=`.
Any temp folder or run tagged with its owner can use the same record to sweep leftovers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

_HAS_PROC = Path("/proc/self/stat").exists()


def start_token(pid: int) -> str | None:
    """When `pid` started, as an opaque string; None when it cannot be told (or it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None if _HAS_PROC else _ps_start(pid)
    # the command name (field 2) may hold spaces or ')': fields after its last ')' start at field 3
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has finished; only its exit status waits to be collected
    return fields[19]  # field 22: starttime


def _ps_start(pid: int) -> str | None:
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def owner() -> dict[str, Any]:
    """The record that names this process: pid, pid_start and host."""
    pid = os.getpid()
    return {"pid": pid, "pid_start": start_token(pid), "host": socket.gethostname()}


def owner_alive(record: dict[str, Any]) -> bool:
    """True unless the recorded process is known to be gone (dead, or its PID now names another).

    A record from another host, or without a pid, cannot be checked here and counts as alive."""
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    if record.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    now = start_token(pid)
    if now is None:
        return not _HAS_PROC  # with /proc: a zombie, finished; without: cannot tell
    then = record.get("pid_start")
    return then is None or now == str(then)


def signal_owner(record: dict[str, Any], sig: int = signal.SIGTERM) -> bool:
    """Send `sig` to the recorded process if it is still that process; False when it is gone or
    cannot be told apart from a stranger (no start time recorded, another host, another user)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or record.get("host") not in (None, socket.gethostname()):
        return False
    if record.get("pid_start") is None:
        return False  # without a start time a reused PID looks the same: never guess
    pidfd = _pidfd(pid)
    try:
        # with a pidfd, the check and the signal address one process even if the PID is reused between
        if not owner_alive(record):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None
