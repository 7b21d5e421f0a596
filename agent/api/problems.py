"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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
        response = problem(exc.status_code, str(exc.detail))
        # Starlette's own headers belong in the answer too.
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path; each
            # method of a path is a route of its own here, so all of them are asked.
            response.headers["allow"] = ", ".join(_allowed(request))
        return response

    _document_validation_errors(app)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed(request: Request) -> list[str]:
    """The methods some route answers for this request's path (asked of the routes
    themselves, as the router would, one method at a time)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ProblemDetails",
    "description": "RFC 9457 problem details; validation errors list each bad path",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                "required": ["path", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}


def _document_validation_errors(app: FastAPI) -> None:
    """The contract says what the API does: FastAPI documents a 422 ValidationError on
    every route with parameters, and this API answers those errors 400 with problem
    details (``invalid_request``), as it did before the contract was checked."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is None:
                    continue
                answer = responses.setdefault("400", {"description": "Invalid request"})
                answer["content"] = {PROBLEM_JSON: {"schema": problem_ref}}
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ProblemDetails"] = _PROBLEM_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(MeshAgentError)
    async def _ours(request: Request, exc: MeshAgentError) -> JSONResponse:
        return for_error(exc)


def for_error(exc: MeshAgentError) -> JSONResponse:
    """The problem response for one of our errors (agent/api/problem_details.py)."""
    return _response(*error_problem(exc))
