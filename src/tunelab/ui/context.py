"""What the web UI's API handlers share: paths, the job manager, error replies, CLI calls."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from tunelab.ui.jobs import JobManager, last_error

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass
class UIContext:
    """Where the UI reads runs and the store, writes uploads and exports, and its key."""

    runs_dir: Path
    home: Path
    api_key: str | None
    jobs: JobManager

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"


def fail(status: int, message: str, field: str | None = None) -> JSONResponse:
    """An error reply the UI shows next to `field` (or atop the form when None)."""
    return JSONResponse({"error": {"message": message, "field": field}}, status_code=status)


async def run_cli(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """`python -m tunelab ARGV`, awaited without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tunelab", *argv, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        return 124, f"error: `tunelab {' '.join(argv)}` took over {timeout_s:.0f} s"
    return proc.returncode or 0, out.decode("utf-8", errors="replace")


async def run_cli_or_fail(argv: list[str], timeout_s: float, failure: str, reply: dict) -> Any:
    """`reply` when `tunelab ARGV` succeeds, else a 400 with its error line (or `failure`)."""
    code, text = await run_cli(argv, timeout_s)
    if code != 0:
        return fail(400, last_error(text.splitlines()) or failure)
    return reply


def safe_filename(name: str) -> str:
    """The last path component of `name`, anything but letters, digits, '.', '_', '-' as '_'."""
    return _UNSAFE.sub("_", Path(name).name)
