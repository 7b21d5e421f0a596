"""ASGI middleware that guards the API before any route runs.

- Bodies over ``max_body_bytes`` are refused with 413, whether declared by Content-Length
  or streamed: the body is read up to the limit and no further.
- Requests that change state from a non-loopback client are refused with 403 unless the
  config allows remote writes: binding the API wider (for metrics) must not open it.
- Invocations (``/v1/invoke/...``, whatever the method) from a non-loopback client are
  refused with 403 unless the config allows remote invocation.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING, Any

from agent.api.problem_details import problem_body

if TYPE_CHECKING:
    # Types only: the fast path (agent/api/fast_routes.py) shares the rule below and must
    # not import Starlette.
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REMOTE_WRITE_REFUSED = (
    "state-changing requests are accepted from loopback only (admin.allow_remote_writes is false)"
)
REMOTE_INVOKE_REFUSED = (
    "invocations are accepted from loopback only (admin.allow_remote_invoke is false)"
)
INVOKE_PREFIX = "/v1/invoke/"


def is_loopback(client: Any) -> bool:
    """Whether an ASGI ``client`` (host, port) is a loopback address."""
    return bool(client) and _loopback_host(str(client[0]))


@functools.lru_cache(maxsize=1024)
def _loopback_host(host: str) -> bool:
    # Parsing an address costs more than the rest of a request's routing: once per host.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = problem_body(status, detail, title)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        allow_remote_writes: bool,
        allow_remote_invoke: bool = False,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.allow_remote_writes = allow_remote_writes
        self.allow_remote_invoke = allow_remote_invoke

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        # The address is parsed only for writes: reads (probes, metrics) are the hot path.
        if (
            method not in SAFE_METHODS
            and not self.allow_remote_writes
            and not is_loopback(scope.get("client"))
        ):
            await _send_problem(
                send,
                403,
                "Forbidden",
                REMOTE_WRITE_REFUSED,
            )
            return
        if (
            not self.allow_remote_invoke
            and str(scope.get("path", "")).startswith(INVOKE_PREFIX)
            and not is_loopback(scope.get("client"))
        ):
            await _send_problem(send, 403, "Forbidden", REMOTE_INVOKE_REFUSED)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_problem(send, 400, "Bad Request", "invalid Content-Length")
                    return
                if declared > limit:
                    await _send_problem(
                        send,
                        413,
                        "Content Too Large",
                        f"body of {declared} bytes is over the limit of {limit}"
                        " (admin.max_body_bytes)",
                    )
                    return
        if method in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        # Read the body whole, up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_problem(
                    send,
                    413,
                    "Content Too Large",
                    f"body is over the limit of {limit} bytes (admin.max_body_bytes)",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
