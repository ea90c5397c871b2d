"""`tunelab ui [MODEL]`: the API server with the web UI (chat, training, models, status)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same flags as `tunelab serve`; the UI is always on."""
    from tunelab.commands import serve

    serve.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Start the server on a thread, print the UI's URL, and serve until Ctrl-C."""
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
    try:
        server.thread.join()
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        server.stop()
    return 0
