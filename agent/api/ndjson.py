"""Streamed replies (gRPC server streaming) as NDJSON, one JSON value a line.

A module of its own so that agent/api/fast_routes.py can be compiled: mypyc does not
compile async generators, and this one runs once per streamed item, not per request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from agent.api.problem_details import dumps, error_problem
from agent.errors import MeshAgentError


async def ndjson(stream: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    """Streamed replies as NDJSON; an error after the first line is a last error line."""
    try:
        async for item in stream:
            yield dumps(item) + b"\n"
    except MeshAgentError as exc:
        # The status line went out with the first item: the error can only be a line.
        yield b'{"error":' + error_problem(exc)[1] + b"}\n"
    finally:
        # A client that hung up: the provider's stream is cancelled now, not at GC.
        await stream.aclose()
