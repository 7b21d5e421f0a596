"""The API's HTTP/1.1 server with bytes on real loopback sockets: framing, keep-alive,
pipelining, limits and timeouts, with a handler that echoes what it was given."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent.api.http1 import ApiRequest, ApiServer, Http1Limits, Reply
from agent.runtime.admin import bind
from fuzz.targets import MemoryTransport
from tests.support.work import interpreted, lines_run

Handler = Callable[[ApiRequest], "Reply | Awaitable[Reply]"]


def echo(request: ApiRequest) -> Reply | Awaitable[Reply]:
    body = {
        "method": request.method,
        "path": request.path.decode(),
        "query": request.query.decode(),
        "body": request.body.decode(),
        "version": request.version,
    }
    if request.path == b"/slow":

        async def later() -> Reply:
            await asyncio.sleep(0.01)
            return Reply(200, json.dumps(body).encode())

        return later()
    if request.path == b"/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"line %d\n" % i

        return Reply(200, b"", b"application/x-ndjson", stream=chunks())
    if request.path == b"/boom":
        raise RuntimeError("handler bug")
    return Reply(200, json.dumps(body).encode())


class Server:
    def __init__(self, handler: Handler, **limits: float) -> None:
        self.sock = bind("127.0.0.1", 0)
        self.server = ApiServer(handler, self.sock, Http1Limits(**limits))  # type: ignore[arg-type]
        self.port = self.sock.getsockname()[1]

    async def __aenter__(self) -> Server:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(grace_s=0.1)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return status, fields, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        for i in range(200):
            writer.write(post(f"/p?i={i}", b"x" * i))
            status, fields, body = await read_response(reader)
            assert status == 200 and "connection" not in fields
            assert json.loads(body)["query"] == f"i={i}"
            assert json.loads(body)["body"] == "x" * i
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        # A mix of at-once and awaited answers: order must still be the requests'.
        writer.write(b"".join(get(f"/{'slow' if i % 3 == 0 else 'fast'}?i={i}") for i in range(40)))
        seen = []
        for _ in range(40):
            status, _, body = await read_response(reader)
            assert status == 200
            seen.append(json.loads(body)["query"])
        assert seen == [f"i={i}" for i in range(40)]
        writer.close()


async def test_http10_and_connection_close_are_closed_after_the_answer() -> None:
    async with Server(echo) as server:
        for request in (
            b"GET /a HTTP/1.0\r\n\r\n",
            get("/a", "Connection: close\r\n"),
        ):
            reader, writer = await server.connect()
            writer.write(request)
            status, fields, _ = await read_response(reader)
            assert status == 200 and fields["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        # HTTP/1.0 with keep-alive asked for stays open.
        reader, writer = await server.connect()
        writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        assert (await read_response(reader))[0] == 200
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_streams_are_chunked_or_close_delimited_for_http10() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        writer.write(get("/stream") + get("/a"))
        status, fields, body = await read_response(reader)
        assert status == 200
        assert fields["transfer-encoding"] == "chunked"
        assert body == b"line 0\nline 1\nline 2\n"
        assert (await read_response(reader))[0] == 200  # the connection goes on
        writer.close()
        reader, writer = await server.connect()
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        _status, fields, body = await read_response(reader)
        assert "transfer-encoding" not in fields and fields["connection"] == "close"
        assert body == b"line 0\nline 1\nline 2\n"
        writer.close()


async def test_a_client_leaving_mid_stream_closes_the_stream_and_ends_the_task() -> None:
    closed = asyncio.Event()
    blocked = asyncio.Event()

    async def forever() -> AsyncIterator[bytes]:
        try:
            yield b"first\n"
            blocked.set()
            await asyncio.Event().wait()
            yield b"never\n"
        finally:
            closed.set()

    def handler(request: ApiRequest) -> Reply:
        return Reply(200, b"", b"application/x-ndjson", stream=forever())

    async with Server(handler) as server:
        _reader, writer = await server.connect()
        writer.write(get("/s"))
        await asyncio.wait_for(blocked.wait(), 5)
        (connection,) = server.server.connections
        task = connection._stream_task
        assert task is not None
        # A reset, not a half-close (a half-closed client still gets its answer).
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await asyncio.wait_for(closed.wait(), 5)  # the generator was closed (aclose)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)  # the cancellation is not swallowed
        assert task.cancelled()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 2048\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"a" * 2048, 413),
    ],
    ids=["request-line", "cl-and-te", "header", "head-too-large", "declared-body", "chunked-body"],
)
async def test_bad_input_is_answered_and_closed_without_touching_others(
    request_bytes: bytes, status: int
) -> None:
    async with Server(echo, max_body_bytes=1024, max_head_bytes=4096) as server:
        good_reader, good_writer = await server.connect()
        good_writer.write(get("/before"))
        assert (await read_response(good_reader))[0] == 200
        reader, writer = await server.connect()
        writer.write(request_bytes)
        got, fields, body = await read_response(reader)
        assert got == status, body
        assert fields["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == status
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # The other connection is unaffected.
        good_writer.write(get("/after"))
        assert (await read_response(good_reader))[0] == 200
        good_writer.close()


async def test_a_slow_client_gets_408_while_others_are_served() -> None:
    async with Server(echo, request_timeout_s=0.3) as server:
        slow_reader, slow_writer = await server.connect()
        slow_writer.write(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        reader, writer = await server.connect()
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        # The sweep (once a second) answers 408 and closes.
        status, fields, _ = await read_response(slow_reader)
        assert status == 408 and fields["connection"] == "close"
        assert await asyncio.wait_for(slow_reader.read(), 5) == b""
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        writer.close()
        slow_writer.close()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with Server(echo, idle_timeout_s=0.2) as server:
        reader, writer = await server.connect()
        writer.write(get("/a"))
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert not server.server.connections


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        writer.write(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["body"] == "hello"
        writer.close()


async def test_a_handler_bug_is_a_500_and_the_connection_goes_on() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        writer.write(get("/boom") + get("/a"))
        status, fields, _body = await read_response(reader)
        assert status == 500 and fields["content-type"] == "application/problem+json"
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_head_answers_have_no_body() -> None:
    async with Server(echo) as server:
        reader, writer = await server.connect()
        writer.write(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n" + get("/b"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        # The next bytes are the next response, not a body.
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["path"] == "/b"
        writer.close()


async def test_many_pipelined_requests_pause_reading_and_are_all_answered() -> None:
    async with Server(echo, max_queued=4) as server:
        reader, writer = await server.connect()
        writer.write(b"".join(get(f"/slow?i={i}") for i in range(100)))
        for i in range(100):
            _status, _, body = await read_response(reader)
            assert json.loads(body)["query"] == f"i={i}"
        writer.close()


async def test_a_large_head_in_small_reads_costs_work_linear_in_its_size() -> None:
    # Issue 25: the URL and headers arrive in pieces (httptools keeps its place); the
    # server's own part must not look back either. Lines of http1.py run (an interpreted
    # copy) for a head of n and of 10n bytes, fed 16 bytes at a time.
    http1 = interpreted("agent.api.http1")

    def lines_for(headers: int) -> int:
        head = (
            b"GET /"
            + b"p" * (headers * 10)
            + b" HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(headers))
            + b"\r\n"
        )
        sock = socket.socket()
        server = http1.ApiServer(
            lambda request: http1.Reply(200, b"{}"),
            sock,
            http1.Http1Limits(max_head_bytes=1 << 22),
        )
        transport = MemoryTransport()

        def feed() -> bytes:
            connection = http1.ApiConnection(server)
            connection.connection_made(transport)
            for at in range(0, len(head), 16):
                connection.data_received(head[at : at + 16])
            return bytes(transport.out)

        try:
            out, lines = lines_run(http1, feed)
        finally:
            sock.close()
        assert out.startswith(b"HTTP/1.1 200 ")
        return lines

    assert lines_for(5_000) <= 10 * lines_for(500) * 1.05
