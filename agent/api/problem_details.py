"""RFC 9457 problem details as bytes: the API's one error shape, with no web framework.

The fast path (agent/api/fast_routes.py) writes these bodies itself; the FastAPI
management surface wraps the same bodies in responses (agent/api/problems.py), so both
answer every error identically.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError, to_json

from agent.calls import CallRejected
from agent.discovery.config_source import ConfigSourceError
from agent.errors import (
    DrainingError,
    InvalidRequest,
    InvokeNotSupported,
    MeshAgentError,
    NoEndpointError,
    RegistrationConflict,
    RegistryError,
    RemoteApplicationError,
    UnknownServiceError,
    UpstreamError,
    UpstreamTimeout,
)

PROBLEM_JSON = "application/problem+json"


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as Starlette's JSONResponse writes it.

    orjson, measured in docs/benchmarks.md: 20x the standard library's speed on the
    replies the API writes. Map keys that are not strings (Java maps) become strings, as
    the standard library does, and NaN and infinities null. What orjson refuses (an
    integer past 64 bits: a Java BigInteger; a set, a Decimal) pydantic-core writes,
    exactly and with the same rules, so no reply becomes an error for its values.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        pass
    try:
        return to_json(value, inf_nan_mode="null")
    except PydanticSerializationError:
        # A string UTF-8 cannot carry: a lone UTF-16 surrogate, which a Java String may
        # hold (issue 23). JSON can, as a \u escape: the standard library writes it so.
        return json.dumps(
            _plain(value), ensure_ascii=True, separators=(",", ":"), allow_nan=False
        ).encode("ascii")


def _plain(value: Any) -> Any:
    """``value`` with what the standard library cannot write turned into what orjson and
    pydantic-core write for it: NaN and infinities null, Decimals as text, sets as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def problem_body(status: int, detail: str, title: str | None = None, **extensions: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extensions)
    return dumps(body)


def status_for(exc: MeshAgentError) -> int:
    # Most specific first: UpstreamTimeout and NoEndpointError are UpstreamErrors.
    if isinstance(exc, UnknownServiceError):
        return 404
    if isinstance(exc, DrainingError):
        return 503
    if isinstance(exc, RegistrationConflict):
        return 409
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


def error_problem(exc: MeshAgentError) -> tuple[int, bytes]:
    """(status, body) for one of our errors (also written into NDJSON streams).

    A failed call's error carries its chain (the apps it came through and the hop that
    failed, agent/telemetry/context.py): it goes out as the ``chain`` extension."""
    extensions: dict[str, Any] = {"chain": list(exc.chain)} if exc.chain else {}
    if isinstance(exc, CallRejected):
        status = exc.http_status()
        return status, problem_body(
            status, str(exc), "Call refused", reason=exc.reason, **extensions
        )
    if isinstance(exc, RemoteApplicationError):
        # The provider's own exception: its type and message, as the provider gave them.
        exception: dict[str, Any] = {"type": exc.exception_type, "message": str(exc)}
        if exc.details is not None:
            exception["details"] = exc.details
        status = exc.http_status or 502
        return status, problem_body(
            status, str(exc), "Provider exception", exception=exception, **extensions
        )
    if isinstance(exc, InvalidRequest):
        # The same shape as the API's own validation errors: one entry per bad path.
        errors = [{"path": path, "message": message} for path, message in exc.errors]
        return 400, problem_body(400, str(exc), "Invalid request", errors=errors, **extensions)
    status = status_for(exc)
    return status, problem_body(status, str(exc), type(exc).__name__, **extensions)


def invalid_request(errors: list[dict[str, str]]) -> tuple[int, bytes]:
    """The API's validation error: 400 with one entry per bad path (as FastAPI's were)."""
    detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
    return 400, problem_body(400, detail or "invalid request", "Invalid request", errors=errors)
