"""`tunelab ui [MODEL]`: the API server with the web UI (chat, training, models, status)."""

from __future__ import annotations

import argparse
import signal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same flags as `tunelab serve`; the UI is always on."""
    from tunelab.commands import serve

    serve.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Start the server on a thread, print the UI's URL, and serve until Ctrl-C (or SIGTERM)."""
    from tunelab.commands.serve import build_config
    from tunelab.serve.app import configure_logging, create_app
    from tunelab.serve.backends import make_backend
    from tunelab.serve.server import ThreadedServer

    config = build_config(args)
    config.ui = True
    configure_logging(config.access_log)
    server = ThreadedServer(create_app(make_backend(config), config), config).start()
    print(f"tunelab ui: open {server.url}/ui/  (model loading; chat works once /health is 200)", flush=True)
    if config.api_key:
        print("the page asks once for the API key given with --api-key", flush=True)
    _stop_on_signals(server.server)
    server.thread.join()  # returns once uvicorn has drained and closed the backend
    return 0


def _stop_on_signals(uvicorn_server) -> None:
    """Ctrl-C and SIGTERM ask the server thread to shut down, as uvicorn does in the main thread.

    A KeyboardInterrupt raised inside `Thread.join` (CPython <= 3.12) marks the thread stopped
    while it still runs, so the process would start exiting before the server closed its backend."""

    def handle(sig: int, frame) -> None:
        if uvicorn_server.should_exit:  # a second Ctrl-C: stop waiting for open requests
            uvicorn_server.force_exit = True
        uvicorn_server.should_exit = True
        print("stopping…", flush=True)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
