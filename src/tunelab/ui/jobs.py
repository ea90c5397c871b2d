"""Background jobs for the web UI: each is its own `python -m tunelab ...` subprocess.

A training run, a pull or an export started from the browser runs in a child
process, so a crash or an out-of-memory kill there never takes the server down,
and the server's event loop stays free. The child writes straight to a log file
(so it keeps running if the server stops); one thread per job follows that file
into a short tail and picks the latest percentage out of progress bars (tqdm
redraws with '\\r', so both '\\r' and '\\n' end a line).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)%")
_TAIL_LINES = 200


@dataclasses.dataclass
class Job:
    """One child process and what the UI shows about it."""

    id: str
    kind: str
    argv: list[str]
    log_path: Path
    meta: dict = dataclasses.field(default_factory=dict)
    state: str = "running"
    returncode: int | None = None
    progress: float | None = None
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    tail: deque = dataclasses.field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    process: subprocess.Popen | None = dataclasses.field(default=None, repr=False)
    stop_requested: bool = False

    def to_dict(self) -> dict:
        """The JSON the UI polls: state, progress, last lines, and the job's own metadata."""
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "returncode": self.returncode,
            "progress": self.progress, "started": self.started, "ended": self.ended,
            "command": " ".join(["tunelab", *self.argv]), "meta": self.meta,
            "pid": self.process.pid if self.process else None,
            "error": self.error_line(),
            "tail": list(self.tail)[-30:],
        }

    def error_line(self) -> str | None:
        """For a failed job, the last `error:` line the CLI printed (or the last line)."""
        if self.state != "failed":
            return None
        return last_error(self.tail) or f"exited with code {self.returncode}"


def last_error(lines: Iterable[str]) -> str:
    """The last `error:` line a CLI run printed, else its last non-blank line ("" if none)."""
    lines = [ln for ln in lines if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


class JobManager:
    """Starts, tracks and stops subprocess jobs; logs live under `log_dir`."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None,
                 program: list[str] | None = None):
        self.log_dir = Path(log_dir)
        self.env = env
        self.program = program or [sys.executable, "-m", "tunelab"]
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, kind: str, argv: list[str], meta: dict | None = None, cwd: Path | None = None) -> Job:
        """Run `python -m tunelab ARGV...` (or `program`) in the background; return its Job at once."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            job_id = f"{kind}-{int(time.time())}-{next(self._ids)}"
        job = Job(id=job_id, kind=kind, argv=list(argv), log_path=self.log_dir / f"{job_id}.log",
                  meta=dict(meta or {}))
        env = dict(self.env if self.env is not None else os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the UI as they are printed
        with open(job.log_path, "wb") as log:  # a file, not a pipe: the child outlives the server
            job.process = subprocess.Popen(
                [*self.program, *argv], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                start_new_session=True,  # Ctrl-C on the server does not hit the children first
            )
        self._jobs[job_id] = job
        threading.Thread(target=self._follow, args=(job,), daemon=True, name=f"job-{job_id}").start()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self._jobs.get(job_id)

    def list(self, kind: str | None = None) -> list[Job]:
        """All jobs (optionally of one kind), newest first."""
        jobs = [j for j in self._jobs.values() if kind is None or j.kind == kind]
        return sorted(jobs, key=lambda j: j.started, reverse=True)

    def find(self, kind: str, **meta) -> Job | None:
        """The newest job of `kind` whose metadata matches every given key."""
        for job in self.list(kind):
            if all(job.meta.get(k) == v for k, v in meta.items()):
                return job
        return None

    def stop(self, job: Job, timeout_s: float = 0.0) -> None:
        """SIGTERM the job (trainers save a checkpoint on it); SIGKILL after `timeout_s` if > 0."""
        if job.process is None or job.process.poll() is not None:
            return
        job.stop_requested = True
        job.process.send_signal(signal.SIGTERM)
        if timeout_s > 0:
            try:
                job.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                job.process.kill()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every running job; called when the server exits."""
        for job in self.list():
            self.stop(job, timeout_s)

    def _follow(self, job: Job) -> None:
        assert job.process is not None
        with open(job.log_path, "rb") as log:
            for line, complete in _lines(log, lambda: job.process.poll() is None):
                if complete:
                    _record(job, line)
                else:
                    _record_progress(job, line)  # a bar being redrawn: no line end yet
        job.returncode = job.process.wait()
        job.ended = time.time()
        job.state = _final_state(job)
        if job.state == "finished":
            job.progress = 100.0


def _lines(log, alive: Callable[[], bool], poll_s: float = 0.2) -> Iterator[tuple[str, bool]]:
    """(line, complete) pieces of a growing log file until the writer exits.

    '\\r' ends a line too, as progress bars redraw with it; the unfinished remainder
    is yielded with complete=False, so a bar's latest state is seen before its redraw.
    """
    buf = b""
    while True:
        running = alive()  # read after checking, so the last output is never missed
        chunk = log.read()
        if chunk:
            buf += chunk
            *done, buf = re.split(rb"\r\n|\r|\n", buf)
            for raw in done:
                yield raw.decode("utf-8", errors="replace"), True
            if buf:
                yield buf.decode("utf-8", errors="replace"), False
        elif not running:
            break
        else:
            time.sleep(poll_s)
    if buf:
        yield buf.decode("utf-8", errors="replace"), True


def _record(job: Job, line: str) -> None:
    if not line.strip():
        return
    job.tail.append(line)
    _record_progress(job, line)


def _record_progress(job: Job, line: str) -> None:
    found = _PERCENT.findall(line)
    if found:
        job.progress = min(100.0, float(found[-1]))


def _final_state(job: Job) -> str:
    if job.returncode == 0:
        return "finished"
    return "stopped" if job.stop_requested else "failed"
