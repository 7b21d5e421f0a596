"""An HTTP/2 provider in-process (cleartext, prior knowledge) for tests of the agent's
HTTP/2 upstream side, on the agent's own engine in the server role: it records what each
stream asked and answers as told, including the HTTP/2 ways of failing that a real server
only shows under load (REFUSED_STREAM, GOAWAY)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from agent.h2.connection import REFUSED_STREAM, Connection, Handler, Settings


@dataclass
class Seen:
    """One request stream as the provider saw it."""

    headers: dict[bytes, bytes]
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None  # the RST_STREAM code the agent sent, if any


class _Connection(Handler):
    def __init__(self, provider: H2Provider) -> None:
        self.provider = provider
        self.conn = Connection(self, client=False, settings=Settings())
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Seen] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.provider.connections += 1
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        self.conn.receive(data)
        self.flush()

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        return None

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        seen = self.streams.get(stream_id)
        if seen is None:
            seen = self.streams[stream_id] = Seen(dict(headers))
            self.provider.seen.append(seen)
        else:
            seen.trailers = dict(headers)
        if end_stream:
            self._answer(stream_id, seen)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        self.conn.ack(stream_id, flow)
        seen = self.streams[stream_id]
        seen.body += data
        if end_stream:
            self._answer(stream_id, seen)

    def stream_reset(self, stream_id: int, code: int) -> None:
        seen = self.streams.get(stream_id)
        if seen is not None:
            seen.reset = code
        self.provider.resets.set()

    def _answer(self, stream_id: int, seen: Seen) -> None:
        provider = self.provider
        path = seen.headers.get(b":path", b"")
        if provider.refuse > 0:
            provider.refuse -= 1
            self.conn.reset(stream_id, REFUSED_STREAM)
            return
        if path.startswith(b"/hold"):
            return  # never answered: the client gives up or resets
        status = provider.status
        body = json.dumps(
            {"name": provider.name, "path": path.decode(), "size": len(seen.body)}
        ).encode()
        headers = [(b":status", b"%d" % status), (b"x-upstream", provider.name.encode())]
        if not path.startswith(b"/chunked"):
            headers.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body)
        if path.startswith(b"/chunked"):
            self.conn.send_headers(stream_id, [(b"x-checksum", b"abc")], end_stream=True)
        else:
            self.conn.end_stream(stream_id)


class H2Provider:
    """Answers every request with ``status`` and a JSON body naming itself; the first
    ``refuse`` streams are refused (REFUSED_STREAM); ``/hold`` is never answered;
    ``/chunked`` has no content-length and ends with trailers."""

    def __init__(self, name: str, status: int = 200, refuse: int = 0) -> None:
        self.name = name
        self.status = status
        self.refuse = refuse
        self.seen: list[Seen] = []
        self.connections = 0
        self.resets = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> H2Provider:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),  # type: ignore[arg-type,return-value]
            "127.0.0.1",
            0,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
