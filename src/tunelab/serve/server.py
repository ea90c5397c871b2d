"""Run the app under uvicorn: in the foreground (the CLI) or on a thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Iterator

import uvicorn

from tunelab.serve.app import configure_logging, create_app
from tunelab.serve.backends import make_backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.service import Service


DRAIN_MARGIN_S = 5.0  # uvicorn's own cut-off (which cancels tasks mid-write) comes only after ours


class DrainingServer(uvicorn.Server):
    """uvicorn, plus a shutdown deadline at which the service ends every open request properly.

    On SIGTERM uvicorn stops accepting and waits for open requests; at `shutdown_timeout_s`
    `Service.end_all` ends them (streams with a final chunk, others with a 503), so uvicorn
    never has to cancel a task mid-response. A clean drain exits 0, not by re-raising SIGTERM.
    """

    def __init__(self, config: uvicorn.Config, service: Service, grace_s: float):
        super().__init__(config)
        self.service, self.grace_s = service, grace_s

    async def shutdown(self, sockets=None) -> None:
        """Start the deadline clock, then let uvicorn drain."""
        deadline = asyncio.get_running_loop().call_later(self.grace_s, self.service.end_all)
        try:
            await super().shutdown(sockets)
        finally:
            deadline.cancel()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn re-raises the captured SIGTERM on exit (code 143); after a drain it is handled."""
        with super().capture_signals():
            yield
            if not self.force_exit:
                self._captured_signals.clear()


def uvicorn_server(app, config: ServeConfig) -> DrainingServer:
    """A uvicorn server for `app`; our own JSON access log replaces uvicorn's."""
    cfg = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                         access_log=False, lifespan="on",
                         timeout_graceful_shutdown=int(config.shutdown_timeout_s + DRAIN_MARGIN_S))
    return DrainingServer(cfg, app.state.service, config.shutdown_timeout_s)


def serve_forever(config: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests then get `shutdown_timeout_s` to finish."""
    configure_logging(config.access_log)
    server = uvicorn_server(create_app(make_backend(config), config), config)
    what = "the model is loaded" if not config.models else "the store is read; each model loads on its first request"
    print(f"tunelab serve: {config.backend} backend on http://{config.host}:{config.port} "
          f"(/health turns 200 when {what})", flush=True)
    server.run()


class ThreadedServer:
    """A server on a background thread; `url` is known once started (port 0 = a free port)."""

    def __init__(self, app, config: ServeConfig):
        self.server = uvicorn_server(app, config)
        self.thread = threading.Thread(target=self.server.run, name="tunelab-serve", daemon=True)
        self.url = ""

    def start(self, timeout: float = 30.0) -> "ThreadedServer":
        """Start and wait until the socket listens."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (as SIGTERM would) and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout)
