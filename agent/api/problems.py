"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.calls import CallRejected
from agent.discovery.config_source import ConfigSourceError
from agent.errors import (
    DrainingError,
    InvalidRequest,
    InvokeNotSupported,
    MeshAgentError,
    NoEndpointError,
    RegistryError,
    RemoteApplicationError,
    UnknownServiceError,
    UpstreamError,
    UpstreamTimeout,
)

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str, title: str | None = None, **extensions: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def status_for(exc: MeshAgentError) -> int:
    # Most specific first: UpstreamTimeout and NoEndpointError are UpstreamErrors.
    if isinstance(exc, UnknownServiceError):
        return 404
    if isinstance(exc, DrainingError):
        return 503
    if isinstance(exc, InvokeNotSupported):
        return 400
    if isinstance(exc, UpstreamTimeout):
        return 504
    if isinstance(exc, NoEndpointError):
        return 503
    if isinstance(exc, UpstreamError):
        return 502
    if isinstance(exc, RegistryError | ConfigSourceError):
        return 503
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()))
            errors.append({"path": location, "message": error.get("msg", "")})
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        return problem(400, detail or "invalid request", "Invalid request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(MeshAgentError)
    async def _ours(request: Request, exc: MeshAgentError) -> JSONResponse:
        return for_error(exc)


def for_error(exc: MeshAgentError) -> JSONResponse:
    """The problem response for one of our errors (also written into NDJSON streams).

    A failed call's error carries its chain (the apps it came through and the hop that
    failed, agent/telemetry/context.py): it goes out as the ``chain`` extension."""
    response = _for_error(exc)
    if exc.chain:
        body = json.loads(bytes(response.body))
        body["chain"] = list(exc.chain)
        return JSONResponse(body, status_code=response.status_code, media_type=PROBLEM_JSON)
    return response


def _for_error(exc: MeshAgentError) -> JSONResponse:
    if isinstance(exc, CallRejected):
        return problem(exc.http_status(), str(exc), "Call refused", reason=exc.reason)
    if isinstance(exc, RemoteApplicationError):
        # The provider's own exception: its type and message, as the provider gave them.
        exception: dict[str, Any] = {"type": exc.exception_type, "message": str(exc)}
        if exc.details is not None:
            exception["details"] = exc.details
        status = exc.http_status or 502
        return problem(status, str(exc), "Provider exception", exception=exception)
    if isinstance(exc, InvalidRequest):
        # The same shape as the API's own validation errors: one entry per bad path.
        errors = [{"path": path, "message": message} for path, message in exc.errors]
        return problem(400, str(exc), "Invalid request", errors=errors)
    return problem(status_for(exc), str(exc), type(exc).__name__)
