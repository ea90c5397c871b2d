"""Run the app under uvicorn: in the foreground (the CLI) or on a thread (tests, benchmarks)."""

from __future__ import annotations

import threading
import time

import uvicorn

from tunelab.serve.app import configure_logging, create_app
from tunelab.serve.backends import make_backend
from tunelab.serve.config import ServeConfig


def uvicorn_server(app, config: ServeConfig) -> uvicorn.Server:
    """A uvicorn server for `app`; our own JSON access log replaces uvicorn's."""
    cfg = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                         access_log=False, timeout_graceful_shutdown=int(config.shutdown_timeout_s),
                         lifespan="on")
    return uvicorn.Server(cfg)


def serve_forever(config: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn then drains in-flight requests for a grace period."""
    configure_logging(config.access_log)
    server = uvicorn_server(create_app(make_backend(config), config), config)
    print(f"tunelab serve: {config.backend} backend on http://{config.host}:{config.port} "
          f"(/health turns 200 when the model is loaded)", flush=True)
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
