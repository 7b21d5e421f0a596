"""The provider used by the HTTP tests: a raw ASGI app run by uvicorn as a process.

``NAME`` (environment) tells which instance answered, so tests can see the balancing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

NAME = os.environ.get("NAME", "upstream")


async def _json(send: Send, status: int, value: object, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    query: bytes = scope["query_string"]
    digest = hashlib.sha256()
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    if path.startswith("/slow"):
        await asyncio.sleep(float(query.decode().partition("=")[2] or 5))
    if path.startswith("/stream"):
        count = int(query.decode().partition("=")[2] or 10)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(count):
            await send(
                {"type": "http.response.body", "body": b"x" * 1000 + b"%d\n" % i, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
        return
    status = 200
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    await _json(
        send,
        status,
        {
            "name": NAME,
            "method": scope["method"],
            "path": path,
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": query.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "size": size,
            "sha256": digest.hexdigest(),
        },
        [(b"x-upstream", NAME.encode())],
    )
