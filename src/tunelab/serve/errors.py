"""OpenAI-shaped API errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import InvalidRequest, TunelabError


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


def error_response(err: APIError) -> JSONResponse:
    """The JSONResponse for an APIError."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0] if err.errors() else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {msg}", None
    return (f"{param}: {msg}" if param else msg), param


def install_handlers(app: FastAPI) -> None:
    """Make every error leave the server in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return error_response(bad_request(message, param=param))

    @app.exception_handler(InvalidRequest)
    async def _invalid_param(_: Request, err: InvalidRequest) -> JSONResponse:
        return error_response(bad_request(str(err), param=err.param))

    @app.exception_handler(TunelabError)
    async def _tunelab(_: Request, err: TunelabError) -> JSONResponse:
        return error_response(bad_request(str(err)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return error_response(APIError(err.status_code, str(err.detail), type=kind))

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception) -> JSONResponse:
        return error_response(APIError(500, f"Internal server error: {type(err).__name__}: {err}",
                                       type="server_error"))
