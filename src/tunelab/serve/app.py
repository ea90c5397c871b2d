"""`create_app(backend, config)`: the FastAPI app wiring routes, auth, limits, logs and lifecycle.

The app starts answering at once: /health says 503 while the backend loads in a
thread, then 200. On SIGTERM the server (`tunelab.serve.server.DrainingServer`) ends open
requests at the grace deadline; the lifespan's own abort is a last resort.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import sys
import threading
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse

from tunelab.data.templates import base_model_notice
from tunelab.serve import (anthropic_routes, embeddings, ollama_models, ollama_routes, openai_routes,
                           responses_routes, store_routes)
from tunelab.serve.auth import bearer_token, key_matches
from tunelab.serve.backends.base import Backend
from tunelab.serve.config import ServeConfig
from tunelab.serve.errors import APIError, error_response, install_handlers, unauthorized
from tunelab.serve.metrics import backend_gauges
from tunelab.serve.library_service import LibraryBackend, LibraryService
from tunelab.serve.service import Service

log = logging.getLogger("tunelab.serve")
access_log = logging.getLogger("tunelab.serve.access")


def create_app(backend: Backend, config: ServeConfig) -> FastAPI:
    """The ASGI app serving `backend` under `config`."""
    service = LibraryService(backend, config) if isinstance(backend, LibraryBackend) else Service(backend, config)
    app = FastAPI(title="tunelab", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    install_handlers(app)
    secured = [Depends(_require_key)]
    app.include_router(openai_routes.router, dependencies=secured)
    app.include_router(ollama_routes.router, dependencies=secured)
    app.include_router(ollama_models.router, dependencies=secured)
    app.include_router(embeddings.router, dependencies=secured)
    app.include_router(responses_routes.router, dependencies=secured)
    app.include_router(anthropic_routes.router, dependencies=secured)
    app.include_router(store_routes.router, dependencies=secured)
    if config.ui:  # the web UI: pages at /ui, JSON API at /ui/api (tunelab.ui.api)
        from tunelab.ui.api import mount_ui

        mount_ui(app, config.api_key, config.runs_dir)
    app.add_api_route("/health", _health, methods=["GET"])
    operator = [] if config.public_metrics else secured  # scrapers may be let in without the key
    app.add_api_route("/metrics", _metrics, methods=["GET"], dependencies=operator)
    app.add_api_route("/openapi.json", _openapi, methods=["GET"], dependencies=operator,
                      include_in_schema=False)
    app.add_middleware(BodyLimitAndLog, service=service)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["*"], allow_headers=["*"])
    return app


async def _require_key(request: Request) -> None:
    expected = request.app.state.service.config.api_key
    given = bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if not key_matches(expected, given):
        raise unauthorized()


async def _health(request: Request) -> JSONResponse:
    """Open to probes, so it says only ready/loading (the load error too when no key is set)."""
    svc: Service = request.app.state.service
    if svc.load_error:
        detail = {} if svc.config.api_key else {"error": svc.load_error}
        return JSONResponse({"status": "error", **detail}, status_code=503)
    if not svc.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def _openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema, behind the API key like the routes it describes."""
    return JSONResponse(request.app.openapi())


async def _metrics(request: Request) -> PlainTextResponse:
    svc: Service = request.app.state.service
    stats = svc.backend.stats() if svc.ready else {}
    gauges = backend_gauges(stats)
    gauges["tunelab_num_requests_pending"] = ("Requests admitted by the HTTP layer.", svc.pending)
    return PlainTextResponse(svc.metrics.render(gauges), media_type="text/plain; version=0.0.4")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    svc: Service = app.state.service
    closing = threading.Event()
    loader = asyncio.create_task(_load(app, svc, closing))
    try:
        yield
    finally:
        closing.set()
        loader.cancel()
        svc.abort_all()  # whatever the graceful period did not finish is cancelled
        await asyncio.gather(loader, return_exceptions=True)
        await asyncio.to_thread(svc.backend.close)


async def _load(app: FastAPI, svc: Service, closing: threading.Event) -> None:
    """Load the backend off the event loop, then the configured adapters, then the watcher."""
    try:
        await _on_daemon_thread(_load_backend, svc, closing)
    except Exception as err:  # noqa: BLE001 - reported by /health, the server stays up
        svc.load_error = f"{type(err).__name__}: {err}"
        log.error("model failed to load: %s", svc.load_error)
        return
    svc.ready = True
    if isinstance(svc, LibraryService):  # --models: unload what keep_alive lets go
        log.info("ready: %d models servable, each loaded on its first request", len(svc.names()))
        await svc.models.reap_forever()
    log.info("ready: %s (%s backend)", svc.backend.model_id, svc.backend.name)
    notice = base_model_notice(getattr(svc.backend, "template", None), svc.backend.model_id)
    if notice:
        log.warning(notice)
    if svc.config.watch:
        from tunelab.serve.watch import watch_runs

        await watch_runs(svc, svc.config.watch, svc.config.watch_interval_s)


def _load_backend(svc: Service, closing: threading.Event) -> None:
    """The model and its adapters; a load that ends after shutdown began closes what it started."""
    svc.backend.load()
    for name, path in svc.config.adapters.items():
        svc.backend.add_adapter(name, str(path))
    if closing.is_set():  # the lifespan's close ran while the model was still loading
        svc.backend.close()


async def _on_daemon_thread(fn, *args) -> Any:
    """fn(*args) on a daemon thread, awaited. Not asyncio.to_thread: exit joins its executor's
    threads, so Ctrl-C during a model load would wait for the whole load (and warm-up) to end."""
    done: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        if not done.set_running_or_notify_cancel():  # cancelled before it began (shutdown)
            return
        try:
            done.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - re-raised in the awaiting task
            done.set_exception(err)

    threading.Thread(target=work, name="tunelab-load", daemon=True).start()
    return await asyncio.wrap_future(done)


BODY_METHODS = ("POST", "PUT", "PATCH")


class BodyLimitAndLog:
    """Pure ASGI middleware: reject oversized (413) and stalled (408) bodies; one JSON log line."""

    def __init__(self, app: Any, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        if scope["method"] in BODY_METHODS and scope["path"].startswith(("/v1/", "/api/")):
            scope = _as_json(scope)
        status[0] = await self._serve(scope, receive, send, status)
        self._log(scope, status[0], time.perf_counter() - start)

    async def _serve(self, scope, receive, send, status: list[int]) -> int:
        """Read the whole body first (bounded in size and time), then run the app; the status."""
        cfg = self.service.config
        declared = _content_length(scope)
        if scope["method"] in BODY_METHODS and (declared is None or declared <= cfg.max_body_bytes):
            try:  # a client that stalls mid-body must not hold a connection forever
                receive, declared = await asyncio.wait_for(_buffered(receive, cfg.max_body_bytes),
                                                           cfg.body_timeout_s)
            except asyncio.TimeoutError:
                await error_response(_body_timeout(cfg.body_timeout_s))(scope, receive, send)
                return 408
            if declared is None:  # the client left before sending its body: nobody to answer
                return 499
        if declared is not None and declared > cfg.max_body_bytes:
            await _too_large(cfg.max_body_bytes)(scope, receive, send)
            return 413
        await self.app(scope, receive, _recording(send, status))
        return status[0]

    def _log(self, scope, status: int, seconds: float) -> None:
        self.service.metrics.observe_http(status)
        if not self.service.config.access_log:
            return
        client = scope.get("client") or ("", 0)
        access_log.info(json.dumps({
            "ts": round(time.time(), 3), "id": uuid.uuid4().hex[:12], "client": client[0],
            "method": scope["method"], "path": scope["path"], "status": status,
            "ms": round(seconds * 1000, 1)}))


def _as_json(scope):
    """API bodies are JSON; Ollama's own docs use `curl -d`, which says form-encoded."""
    kind = dict(scope.get("headers", [])).get(b"content-type", b"")
    if kind and not kind.startswith(b"application/x-www-form-urlencoded"):
        return scope
    headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int):
    return error_response(APIError(413, f"request body is larger than this server's limit of "
                                        f"{limit} bytes", code="body_too_large"))


def _body_timeout(seconds: float) -> APIError:
    return APIError(408, f"the request body did not arrive within {seconds:g} s",
                    code="body_timeout")


async def _buffered(receive, limit: int):
    """Read a body up to `limit`+1 bytes; replay it to the app. Size None: the client left."""
    body, more = b"", True
    while more and len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return receive, None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    replayed = [False]

    async def replay():
        if not replayed[0]:
            replayed[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as usual

    return replay, len(body)


def _recording(send, status: list[int]):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        await send(message)

    return wrapped


def configure_logging(access: bool) -> None:
    """Plain messages for tunelab logs on stderr; the access log is already JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("tunelab")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    access_log.disabled = not access
