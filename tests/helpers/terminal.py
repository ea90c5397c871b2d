"""A child process on a pseudo-terminal, so tests see what a person at a terminal sees."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time


class Terminal:
    """A child process on a pty: type lines, wait for text to appear."""

    def __init__(self, args: list[str]):
        self.master, slave = pty.openpty()
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.output = ""
        self.pos = 0  # where the last match ended: text after it may already be buffered

    def expect(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output[self.pos:])
            if m:
                self.pos += m.end()
                return m
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode("utf-8", "replace")
                except OSError:
                    break
        raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{self.output[-2000:]}")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)
