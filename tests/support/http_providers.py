"""Small HTTP/1.1 providers for in-process tests of the HTTP listener: an h11 server that
can misbehave on purpose, and one that answers fixed bytes per path (wire-level cases h11
would not write); the agent config that puts them behind a listener."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import h11

from agent.runtime.agent import Agent
from tests.fixtures.net import free_port


class Provider:
    """An h11 server answering ``{"name": ..., "path": ...}``; ``mode`` breaks it on purpose.

    ``close_after``: closes each connection after one response, without saying so.
    ``short_body``: promises 100 bytes, sends 10 and closes.
    """

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        self.mode = mode
        self.connections = 0
        self.open = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Provider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.Request):
                    target = event.target
                    while not isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                    if isinstance(event, h11.ConnectionClosed):
                        return
                    await self._answer(conn, writer, target)
                    if self.mode != "ok":
                        return
                    conn.start_next_cycle()
                    continue
                return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self.open -= 1
            writer.close()

    async def _answer(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, target: bytes
    ) -> None:
        body = json.dumps({"name": self.name, "path": target.decode()}).encode()
        length = b"100" if self.mode == "short_body" else str(len(body)).encode()
        if self.mode == "short_body":
            body = body[:10]
        writer.write(
            conn.send(h11.Response(status_code=200, headers=[(b"content-length", length)]))
        )
        writer.write(conn.send(h11.Data(data=body)))
        if self.mode != "short_body":
            writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def config(ports: list[int], **listener: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        "api": [{"host": "127.0.0.1", "port": p} for p in ports],
                        "empty": [],
                    }
                },
            }
        ],
        "services": [
            {"name": "api", "protocol": "http", "health": {"enabled": False}},
            {"name": "empty", "protocol": "http", "health": {"enabled": False}},
        ],
        "listeners": [
            {"port": free_port(), "service": "api", "protocol": "http", "config": listener}
        ],
        "drain_timeout_s": 1,
    }


def url(agent: Agent) -> str:
    host, port = agent.listeners[0].address
    return f"http://{host}:{port}"


class RawProvider:
    """Answers each request with the bytes ``answers`` holds for its path (wire-level
    cases h11 would not write: close-delimited bodies, trailers); counts connections."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        # Paths answered only once ``gate`` is set (a response under way at a drain).
        self.gated: set[bytes] = set()
        self.gate = asyncio.Event()
        self.connections = 0
        self.open = 0  # connections not yet closed
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RawProvider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.requests.append(head)
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                path = head.split(b" ", 2)[1]
                if path in self.gated:
                    await self.gate.wait()
                answer = self.answers[path]
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.gate.set()  # gated handlers finish instead of being cancelled mid-wait
        self.server.close()
        await self.server.wait_closed()
