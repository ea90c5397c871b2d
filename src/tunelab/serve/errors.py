"""OpenAI-shaped API errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import InvalidRequest, TunelabError
from tunelab.serve.strict import UNSUPPORTED_FIELD, UNSUPPORTED_VALUE


class APIError(Exception):
    """An error a route raises; rendered as OpenAI's error body with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 naming the offending parameter."""
    return APIError(400, message, param=param, code=code)


def model_not_found(name: str, known: list[str]) -> APIError:
    """A 404 for an unknown `model`, listing what is served."""
    return APIError(404, f"The model '{name}' does not exist; served models: {', '.join(known)}",
                    param="model", code="model_not_found")


def unauthorized() -> APIError:
    """401 for a missing or wrong API key (never says which)."""
    return APIError(401, "Invalid or missing API key; send 'Authorization: Bearer KEY'",
                    type="authentication_error", code="invalid_api_key")


def overloaded(pending: int) -> APIError:
    """429 when the bounded queue is full."""
    return APIError(429, f"Server is busy ({pending} requests pending); retry later",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def not_ready() -> APIError:
    """503 while the model is still loading."""
    return APIError(503, "Model is still loading; retry shortly", type="service_unavailable",
                    code="loading", headers={"Retry-After": "2"})


def shutting_down() -> APIError:
    """503 for a request still running when the shutdown grace period ends."""
    return APIError(503, "The server is shutting down; retry on another instance or later",
                    type="service_unavailable", code="shutting_down", headers={"Retry-After": "5"})


def error_response(err: APIError) -> JSONResponse:
    """The JSONResponse for an APIError."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    errors = [(_field_path(e.get("loc", ())) + _named_field(e), e) for e in err.errors()]
    if not errors:
        return "invalid request", None
    # of a union's failed branches, the one that got furthest says the most ([true] -> prompt.0)
    path, first = max(errors, key=lambda pe: len(pe[0]))
    param = ".".join(path) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {msg}", None
    if first.get("type") in (UNSUPPORTED_FIELD, "extra_forbidden"):  # "unsupported field 'a.0.b'..."
        return f"unsupported field '{param}'{first.get('ctx', {}).get('detail', '')}", param
    return (f"{param}: {msg}" if param else msg), param


def _named_field(error: dict[str, Any]) -> list[str]:
    """The field our own errors (serve/strict.py) name below their location."""
    field = (error.get("ctx") or {}).get("field")
    return [field] if error.get("type") in (UNSUPPORTED_FIELD, UNSUPPORTED_VALUE) and field else []


def _field_path(loc: tuple) -> list[str]:
    """A pydantic error location as field names and indexes, without 'body' or union tags."""
    return [str(x) for x in loc
            if isinstance(x, int) or (_FIELD.match(x) and x not in ("body", "str", "int", "float"))]


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")  # field names; tags look like 'list[int]', 'function-after[..]'


def respond(request: Request, err: APIError) -> JSONResponse:
    """The error as the client's API expects: Ollama's `{"error": "..."}` under /api/, Anthropic's
    under /v1/messages, else OpenAI's."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)
    if request.url.path.startswith("/v1/messages"):
        return JSONResponse(anthropic_body(err), status_code=err.status, headers=err.headers)
    return error_response(err)


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error"}


def anthropic_body(err: APIError) -> dict[str, Any]:
    """Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`, typed by status."""
    kind = _ANTHROPIC_TYPES.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def as_api_error(err: Exception) -> APIError:
    """Any exception a route lets through, as the APIError it is answered with."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, RequestValidationError):
        message, param = _validation_message(err)
        return bad_request(message, param=param)
    if isinstance(err, InvalidRequest):
        return bad_request(str(err), param=err.param)
    if isinstance(err, TunelabError):
        return bad_request(str(err))
    if isinstance(err, StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return APIError(err.status_code, str(err.detail), type=kind)
    return APIError(500, f"Internal server error: {type(err).__name__}: {err}", type="server_error")


def install_handlers(app: FastAPI) -> None:
    """Make every error leave the server in its API's shape (OpenAI's, or Ollama's under /api/)."""

    async def _handle(request: Request, err: Exception) -> JSONResponse:
        return respond(request, as_api_error(err))

    for kind in (APIError, RequestValidationError, InvalidRequest, TunelabError,
                 StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _handle)
