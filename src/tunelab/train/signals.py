"""Ctrl-C / SIGTERM during training: finish the step, save a checkpoint, exit; again: stop at once."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_on_signals(stop: threading.Event, echo_s: float = 0.0) -> Iterator[None]:
    """First Ctrl-C/SIGTERM sets `stop`; a second one raises KeyboardInterrupt.

    A second signal within `echo_s` seconds of the first counts as the same request: a
    launcher (torchrun, accelerate launch) forwards Ctrl-C to workers that already got it
    from the terminal, and SLURM signals both the launcher and its workers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[float] = []

    def handler(signum, frame):
        if stop.is_set() and not (first and time.monotonic() - first[0] < echo_s):
            raise KeyboardInterrupt
        first.append(time.monotonic())
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
