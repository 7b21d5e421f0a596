"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api.problem_details import (
    PROBLEM_JSON,
    error_problem,
    invalid_request,
    problem_body,
    status_for,
)
from agent.errors import MeshAgentError

__all__ = ["PROBLEM_JSON", "for_error", "install", "problem", "status_for"]


class _Problem(JSONResponse):
    """A JSONResponse of a body already encoded (by agent/api/problem_details.py)."""

    def render(self, content: Any) -> bytes:
        return bytes(content)


def _response(status: int, body: bytes) -> JSONResponse:
    return _Problem(body, status_code=status, media_type=PROBLEM_JSON)


def problem(status: int, detail: str, title: str | None = None, **extensions: Any) -> JSONResponse:
    return _response(status, problem_body(status, detail, title, **extensions))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()))
            errors.append({"path": location, "message": error.get("msg", "")})
        return _response(*invalid_request(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(MeshAgentError)
    async def _ours(request: Request, exc: MeshAgentError) -> JSONResponse:
        return for_error(exc)


def for_error(exc: MeshAgentError) -> JSONResponse:
    """The problem response for one of our errors (agent/api/problem_details.py)."""
    return _response(*error_problem(exc))
