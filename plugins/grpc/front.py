"""gRPC and HTTP/JSON on one port: the listener's ``http_transcoding: true``.

Each connection's first bytes decide who serves it (:class:`_Sniffing`):

- the HTTP/2 client preface (every gRPC client: gRPC is HTTP/2 only, with content-type
  ``application/grpc``): the connection is handed, with what was read, to the listener's
  h2 relay (plugins/grpc/h2relay.py), as if the relay had accepted it, so a transcoding
  port has the relay's cost, governance and HTTP/2 defences (flood and stream limits);
- anything else is HTTP/1.1 (h11): each request is matched against the service's
  ``google.api.http`` rules (plugins/grpc/transcode.py) and sent as a gRPC call through
  the same path as JSON invocation (plugins/grpc/invoker.py: endpoint per request,
  deadline, Triple headers, status → HTTP status with the problem details).

So REST over HTTP/2 (h2c) is not transcoded: an HTTP/2 connection is taken for gRPC.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

import h11

from agent.errors import MeshAgentError, NoEndpointError
from agent.h2.connection import PREFACE
from agent.runtime.handover import hand_over
from agent.runtime.protocols import InvokeRequest, ListenerContext
from plugins.grpc.channels import ChannelPool, target
from plugins.grpc.config import GrpcServiceOptions
from plugins.grpc.invoker import invoke
from plugins.grpc.reflection import DescriptorCache, MethodInfo
from plugins.grpc.transcode import NoRoute, Route, match, reply_json, request_message, routes

log = logging.getLogger(__name__)

# A connection that has not said which protocol it speaks within this long is closed.
_SNIFF_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 60.0
_CHUNK = 65536
# gRPC metadata from HTTP headers, as grpc-gateway passes them.
_METADATA_PREFIX = "grpc-metadata-"
_MAX_HEADER_BYTES = 64 * 1024


def protocol_factory(
    context: ListenerContext,
    pool: ChannelPool,
    cache: DescriptorCache,
    max_body: int,
    relay: Callable[[], asyncio.Protocol],
) -> Callable[[], asyncio.Protocol]:
    """Connections of a transcoding listener: HTTP/2 to ``relay`` (the h2 relay's
    protocol factory), HTTP/1.1 transcoded."""
    front = _Front(context, pool, cache, max_body)

    def make() -> asyncio.Protocol:
        return _Sniffing(front, relay)

    return make


class _Sniffing(asyncio.Protocol):
    """A connection until its first bytes say HTTP/2 (the preface) or not."""

    def __init__(self, front: _Front, relay: Callable[[], asyncio.Protocol]) -> None:
        self.front = front
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.handed_over = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        # Counted in now (the listener's connection limit), as every listener protocol.
        self.front.context.track(self.transport)
        self.timer = asyncio.get_running_loop().call_later(_SNIFF_TIMEOUT_S, self._too_slow)

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.handed_over:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= len(PREFACE) or not PREFACE.startswith(self.buffer):
            self._hand_over(eof=False)

    def eof_received(self) -> bool:
        if self.handed_over or not self.buffer:
            return False  # nothing said: closed
        return self._hand_over(eof=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.handed_over and self.transport is not None:
            self.front.context.untrack(self.transport)

    def _hand_over(self, eof: bool) -> bool:
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.handed_over = True
        buffered, self.buffer = self.buffer, b""
        if buffered.startswith(PREFACE):
            # The relay counts the connection in itself, in its connection_made.
            self.front.context.untrack(self.transport)
            return hand_over(self.transport, self.relay(), buffered, eof)
        # HTTP/1.1: a stream reader for h11's loop; the connection stays counted in until
        # _Front.connection ends.
        reader = asyncio.StreamReader(limit=_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader, self.front.connection)
        return hand_over(self.transport, protocol, buffered, eof)


class _Front:
    def __init__(
        self, context: ListenerContext, pool: ChannelPool, cache: DescriptorCache, max_body: int
    ) -> None:
        self.context = context
        self.pool = pool
        self.cache = cache
        self.max_body = max_body
        self._table: tuple[dict[str, MethodInfo] | None, list[Route]] = (None, [])

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = cast(asyncio.Transport, writer.transport)
        self.context.stats.accepted += 1
        try:
            await self._http1(reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            # One connection's bug must not reach the loop's handler, nor other clients.
            log.exception(
                "grpc/http connection failed",
                extra={"listener": self.context.listener.display_name},
            )
        finally:
            writer.close()
            self.context.untrack(transport)

    async def _http1(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        while True:
            try:
                request, body = await self._read_request(conn, reader)
            except _BodyTooLarge:
                await _respond(conn, writer, 413, _problem(413, "request body too large"))
                return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _respond(conn, writer, 400, _problem(400, f"bad HTTP/1.1: {exc}"))
                return
            if request is None:
                return
            await self._exchange(conn, writer, request, body)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                # A keep-alive connection idle (or a request stalled) this long is closed.
                async with asyncio.timeout(_IDLE_TIMEOUT_S):
                    conn.receive_data(await reader.read(_CHUNK))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _exchange(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        self.context.stats.requests += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        try:
            route, result = await self._call(request, headers, body)
        except NoRoute as exc:
            self.context.stats.request_errors += 1
            extra = [("allow", ", ".join(exc.allowed))] if exc.allowed else []
            await _respond(conn, writer, exc.status, _problem(exc.status, str(exc)), extra)
            return
        except MeshAgentError as exc:
            self.context.stats.request_errors += 1
            status, payload = _error(exc)
            await _respond(conn, writer, status, payload)
            return
        except Exception:
            # A bug of ours: this request gets a 500, the connection and others go on.
            log.exception("transcoding failed", extra={"target": request.target.decode("latin-1")})
            self.context.stats.request_errors += 1
            await _respond(conn, writer, 500, _problem(500, "internal error while transcoding"))
            return
        if result.stream is None:
            payload = _json(reply_json(route, result.result))
            await _respond(
                conn,
                writer,
                200,
                payload,
                [("content-type", "application/json"), ("x-meshagent-endpoint", result.endpoint)],
            )
            return
        await self._stream(conn, writer, route, result.stream, result.endpoint)

    async def _call(
        self, request: h11.Request, headers: Mapping[str, str], body: bytes
    ) -> tuple[Route, Any]:
        target_ = request.target.decode("latin-1")
        path, _, query_text = target_.partition("?")
        table = await self._routes()
        route, variables = match(table, request.method.decode("latin-1"), path)
        message = request_message(
            route, variables, parse_qsl(query_text, keep_blank_values=True), body
        )
        metadata = {
            k[len(_METADATA_PREFIX) :]: v
            for k, v in headers.items()
            if k.startswith(_METADATA_PREFIX) and len(k) > len(_METADATA_PREFIX)
        }
        grpc_service = route.info.path.split("/")[1]
        result = await invoke(
            InvokeRequest(
                self.context.service,
                self.context.cluster,
                f"{grpc_service}.{route.method}",
                {"message": message, "metadata": metadata},
                calls=self.context.calls,
                incoming=headers,
            ),
            self.pool,
            self.cache,
        )
        return route, result

    async def _routes(self) -> list[Route]:
        """The service's HTTP routes, from the descriptors JSON invocation also uses (and
        so refreshed when they are: on UNIMPLEMENTED or INTERNAL from a provider)."""
        service = self.context.service
        options = service.protocol_options(GrpcServiceOptions)
        host = self.context.cluster.choose()
        if host is None:
            raise NoEndpointError(f"no provider of {service.name} is available")
        methods = await self.cache.methods(
            self.context.cluster.name,
            target(host.instance.host, host.instance.port),
            options.grpc_service or service.name,
            options.descriptor_set,
        )
        if self._table[0] is not methods:
            self._table = (methods, routes(methods))
        return self._table[1]

    async def _stream(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        route: Route,
        replies: AsyncGenerator[Any, None],
        endpoint: str,
    ) -> None:
        """A server-streaming method: NDJSON, one reply a line, chunked; a status after
        some replies is a last line ``{"error": problem}``."""
        headers = [
            ("content-type", "application/x-ndjson"),
            ("transfer-encoding", "chunked"),
            ("x-meshagent-endpoint", endpoint),
        ]
        try:
            await _send(conn, writer, h11.Response(status_code=200, headers=headers, reason="OK"))
            try:
                async for item in replies:
                    line = _json(reply_json(route, item)) + b"\n"
                    await _send(conn, writer, h11.Data(data=line))
            except MeshAgentError as exc:
                _, payload = _error(exc)
                line = _json({"error": json.loads(payload)}) + b"\n"
                await _send(conn, writer, h11.Data(data=line))
            await _send(conn, writer, h11.EndOfMessage())
        finally:
            await replies.aclose()


def _json(value: Any) -> bytes:
    # Compact, as the API writes JSON.
    return json.dumps(value, separators=(",", ":")).encode()


class _BodyTooLarge(Exception):
    pass


def _problem(status: int, detail: str) -> bytes:
    from agent.api.problems import problem

    return bytes(problem(status, detail).body)


def _error(exc: MeshAgentError) -> tuple[int, bytes]:
    # The API's own problem details, so a transcoded error reads like an invoked one.
    from agent.api.problems import for_error

    response = for_error(exc)
    return response.status_code, bytes(response.body)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
    writer.write(conn.send(event) or b"")
    await writer.drain()


async def _respond(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    if headers is None or not any(k == "content-type" for k, _ in headers):
        kind = "application/problem+json" if status >= 400 else "application/json"
        headers = [("content-type", kind), *(headers or [])]
    headers = [*headers, ("content-length", str(len(payload)))]
    response = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
    await _send(conn, writer, response)
    await _send(conn, writer, h11.Data(data=payload))
    await _send(conn, writer, h11.EndOfMessage())
