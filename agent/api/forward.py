"""A worker's API: what it does not answer itself, forwarded to its supervisor.

With ``workers: N`` (docs/workers.md) every worker listens on the API port too
(SO_REUSEPORT) and answers ``/healthz`` and the JSON invocations itself (its clusters are
the supervisor's, mirrored); everything else (registrations, configuration, readiness,
the merged ``/metrics``, the status page, the contract's pages, the HTTP invocation) is
the supervisor's, and goes to it here: over the supervisor's Unix socket, one connection
per request, with the client's address in ``x-meshagent-client`` (which only that socket
trusts, so the loopback guards judge the real client). The answer comes back as it was
given: whole when it has a length, streamed when it is chunked (NDJSON, server-sent
events), its fields but the hop-by-hop ones kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httptools

from agent.api.http1 import FORWARDED_CLIENT, ApiRequest, Reply, problem_reply

log = logging.getLogger(__name__)

# Fields that describe one hop's connection, not the message (RFC 9110 7.6.1), plus the
# ones this hop writes itself.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
        FORWARDED_CLIENT,
    }
)
_MAX_HEAD_BYTES = 64 * 1024
# The supervisor answers a management request in well under this; a stream (an SSE watch)
# is not bounded by it once its head has come.
HEAD_TIMEOUT_S = 30.0


class _Response:
    """httptools callbacks: the head, then the body's chunks into a queue."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_done = asyncio.Event()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > _MAX_HEAD_BYTES:
            raise ValueError("response head over 64 KiB")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done.set()

    def on_body(self, body: bytes) -> None:
        self.chunks.put_nowait(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.chunks.put_nowait(None)


class SupervisorForward:
    """The worker API's handler for what is not its own (``FastRoutes``' bridge)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def __call__(self, request: ApiRequest) -> asyncio.Future[Reply]:
        return asyncio.ensure_future(self.forward(request))

    async def forward(self, request: ApiRequest) -> Reply:
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            log.error("api: supervisor unreachable: %s", exc)
            return problem_reply(503, "the agent's supervisor is not reachable")
        writer.write(_request_bytes(request))
        response = _Response()
        reading = asyncio.ensure_future(_read(reader, response))
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                await asyncio.wait(
                    [reading, asyncio.ensure_future(response.head_done.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        except TimeoutError:
            pass
        if not response.head_done.is_set() or response.status == 0:
            reading.cancel()
            writer.close()
            return problem_reply(502, "the agent's supervisor gave no answer")
        content_type = b""
        headers: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        for name, value in response.headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name not in _HOP:
                headers.append((name, value))
        if length is not None or request.method == "HEAD" or response.status in (204, 304):
            body = []
            while (chunk := await response.chunks.get()) is not None:
                body.append(chunk)
                if response.status in (204, 304) or request.method == "HEAD":
                    break
            writer.close()
            reading.cancel()
            return Reply(response.status, b"".join(body), content_type, headers)
        return Reply(
            response.status,
            content_type=content_type,
            headers=headers,
            stream=_stream(response, reading, writer),
        )


def _request_bytes(request: ApiRequest) -> bytes:
    target = request.path + (b"?" + request.query if request.query else b"")
    lines = [request.method.encode("latin-1") + b" " + target + b" HTTP/1.1"]
    lines.append(b"host: meshagent-supervisor")
    for name, value in request.headers:
        if name not in _HOP:
            lines.append(name + b": " + value)
    client = request.client
    if client is not None:
        lines.append(FORWARDED_CLIENT + b": " + f"{client[0]} {client[1]}".encode())
    lines.append(b"content-length: " + str(len(request.body)).encode())
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + request.body


async def _read(reader: asyncio.StreamReader, response: _Response) -> None:
    try:
        # The supervisor frames every answer (a length or chunks: the request is HTTP/1.1),
        # so an end before the message's is a cut answer, ended here.
        while data := await reader.read(65536):
            response.parser.feed_data(data)
            if response.complete:
                return
    except (httptools.HttpParserError, ValueError, OSError) as exc:
        log.error("api: unreadable answer from the supervisor: %s", exc)
    finally:
        if not response.complete:
            response.chunks.put_nowait(None)
        response.head_done.set()


async def _stream(
    response: _Response, reading: asyncio.Future[None], writer: asyncio.StreamWriter
) -> AsyncIterator[bytes]:
    try:
        while (chunk := await response.chunks.get()) is not None:
            yield chunk
    finally:
        reading.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
