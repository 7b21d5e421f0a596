"""Requests off the fast path, handed to the management app (FastAPI) as ASGI.

The app is built on the first such request, not at start: FastAPI, Starlette and their
models are most of an idle agent's memory and serve calls users make rarely
(registrations, services, clusters, rules, /docs). A request arrives here already read
whole and within the body limit (agent/api/http1.py); the app's reply comes back as a
:class:`Reply`, whole when the app sent one body message, else as a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from agent.api.http1 import ApiRequest, Reply, problem_reply

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

_END = object()
_FRAMING = (b"content-length", b"transfer-encoding", b"connection")


class AsgiBridge:
    def __init__(self, factory: Callable[[], AsgiApp], server: tuple[str, int]) -> None:
        self._factory = factory
        self._app: AsgiApp | None = None
        self._server = server

    @property
    def loaded(self) -> bool:
        return self._app is not None

    def app(self) -> AsgiApp:
        if self._app is None:
            self._app = self._factory()
        return self._app

    def scope(self, request: ApiRequest) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": unquote_to_bytes(request.path).decode("utf-8", "replace"),
            "raw_path": request.path,
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            "client": request.client,
            "server": self._server,
            "state": {},
        }

    async def __call__(self, request: ApiRequest) -> Reply:
        app = self.app()
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Reply] = loop.create_future()
        chunks: asyncio.Queue[object] | None = None
        start: Message | None = None
        received = False
        head = request.method == "HEAD"

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await asyncio.shield(request.connection.waiter_closed())
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal start, chunks
            kind = message["type"]
            if kind == "http.response.start":
                start = message
                return
            if kind != "http.response.body" or start is None:
                return
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if chunks is None:
                if not more:
                    if not reply.done():
                        reply.set_result(_reply(start, body, None, head))
                    return
                chunks = asyncio.Queue()
                reply.set_result(_reply(start, b"", _drain(chunks), head))
            chunks.put_nowait(body)
            if not more:
                chunks.put_nowait(_END)
            # Backpressure: the app waits while the client's socket buffer is full (the
            # wait ends when the connection is lost, too).
            await request.connection.writable()

        async def run() -> None:
            try:
                await app(self.scope(request), receive, send)
            except Exception:
                log.exception("api: %s %s failed", request.method, request.path[:200])
                if not reply.done():
                    reply.set_result(problem_reply(500, "internal error (logged by the agent)"))
            finally:
                if chunks is not None:
                    chunks.put_nowait(_END)
                elif not reply.done():
                    reply.set_result(problem_reply(500, "the management app sent no response"))

        task = loop.create_task(run())
        try:
            return await reply
        except asyncio.CancelledError:
            task.cancel()
            raise


def _reply(start: Message, body: bytes, stream: AsyncIterator[bytes] | None, head: bool) -> Reply:
    """The app's response as a Reply. The server frames the body itself, so the app's
    framing fields are dropped, except a HEAD answer's Content-Length (no body to count)."""
    content_type = b""
    headers: list[tuple[bytes, bytes]] = []
    framing = (b"transfer-encoding", b"connection") if head else _FRAMING
    for name, value in start.get("headers", []):
        lower = bytes(name).lower()
        if lower == b"content-type":
            content_type = bytes(value)
        elif lower not in framing:
            headers.append((lower, bytes(value)))
    return Reply(int(start["status"]), body, content_type, headers, stream)


async def _drain(chunks: asyncio.Queue[object]) -> AsyncIterator[bytes]:
    while True:
        chunk = await chunks.get()
        if chunk is _END:
            return
        assert isinstance(chunk, bytes)
        yield chunk
