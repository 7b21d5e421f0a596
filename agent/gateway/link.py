"""The link between gateways: HTTP/2 over mutual TLS, one CONNECT stream per connection.

Each connection an importing gateway accepts for a remote service becomes one stream on a
long-lived link to a gateway of that service's data center: ``CONNECT`` with
``:authority`` = the service and ``meshagent-source-dc`` = the caller's data center (the
shape of Istio's HBONE tunnels). The exporting gateway answers ``200`` once it has a
connection to one of the service's endpoints, then both relay the bytes untouched, so
HTTP/1.1, HTTP/2, gRPC, Dubbo and Thrift cross alike with their trace context, deadlines
and errors end to end; ``404`` when the service is not exported, ``503`` when no endpoint
could be reached. Many connections share one link: one TLS handshake, HTTP/2 flow control
per stream (a slow reader slows its writer, not the others), our HTTP/2 engine's
defences (agent/h2/connection.py: rapid reset, control-frame floods, stream limits).

Mutual TLS (agent/tls.py: certificates rotate without a restart): a peer without a
certificate of the CA never gets past the handshake, and the refusal is logged (the
handshake runs inside the event loop's TLS protocol, so its failure is seen through the
context's ``sslobject_class``). A link that does not complete the HTTP/2 preface and
SETTINGS within its timeout is closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from mypy_extensions import mypyc_attr

from agent.h2.connection import (
    CANCEL,
    HEAD,
    Connection,
    Handler,
    ProtocolError,
    Settings,
    StreamGone,
)

log = logging.getLogger(__name__)

# Per stream 256 KiB in flight each way, 1 MiB per link: a relayed connection's share.
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
MAX_STREAMS = 1000
SOURCE_DC = b"meshagent-source-dc"


class _RefusalLogged(ssl.SSLObject):
    """Logs a failed handshake (a peer without a certificate of the CA, say): the loop's
    TLS protocol reports it only in debug mode."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            log.warning("gateway link refused: TLS handshake failed", extra={"error": str(exc)})
            raise


def link_context(context: ssl.SSLContext) -> ssl.SSLContext:
    context.sslobject_class = _RefusalLogged
    return context


def link_settings() -> Settings:
    return Settings(
        stream_window=STREAM_WINDOW,
        connection_window=CONNECTION_WINDOW,
        max_concurrent_streams=MAX_STREAMS,
    )


class Pipe:
    """One relayed connection: a stream of a link joined to a TCP transport (the app's
    connection on the importing side, the provider's on the exporting side)."""

    def __init__(self, link: LinkConnection | None = None, stream_id: int = 0) -> None:
        self.link = link
        self.stream_id = stream_id
        self.tcp: asyncio.Transport | None = None
        # Open for DATA: the exporting side sent 200, or the importing side received it.
        self.open = False
        self.pending = bytearray()  # from TCP, waiting for the stream (window or opening)
        self.held: list[bytes] = []  # from the stream, waiting for the TCP side
        self.tcp_eof = False
        self.end_sent = False
        self.stream_eof = False
        self.tcp_write_paused = False
        self.tcp_read_paused = False
        self.unacked = 0
        self.done = False
        # The importing side: the exporting gateway's answer (its :status).
        self.response: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    # -- the TCP side -----------------------------------------------------------------

    def attach(self, transport: asyncio.Transport) -> None:
        self.tcp = transport
        for data in self.held:
            transport.write(data)
        self.held.clear()
        if self.unacked and self.link is not None:
            self.link.connection.ack(self.stream_id, self.unacked)
            self.unacked = 0
            self.link.flush()
        if self.stream_eof:
            _half_close(transport)

    def tcp_data(self, data: bytes) -> None:
        link = self.link
        if self.open and link is not None and not self.pending and not self.done:
            # The usual case: nothing waiting and room in the window, sent as it came.
            connection = link.connection
            if connection.window(self.stream_id) >= len(data):
                connection.send_data(self.stream_id, data)
                link.flush()
                return
        self.pending += data
        self.flush()

    def tcp_eof_received(self) -> None:
        self.tcp_eof = True
        self.flush()

    def flush(self) -> None:
        """Send what TCP gave within the stream's window; read no more while some waits."""
        link = self.link
        if self.open and link is not None and not self.done:
            connection = link.connection
            try:
                if self.pending:
                    window = connection.window(self.stream_id)
                    if window > 0:
                        chunk = bytes(self.pending[:window])
                        del self.pending[:window]
                        connection.send_data(self.stream_id, chunk)
                if self.tcp_eof and not self.pending and not self.end_sent:
                    self.end_sent = True
                    connection.end_stream(self.stream_id)
            except StreamGone:
                self.pending.clear()
            link.flush()
        tcp = self.tcp
        if tcp is not None:
            if self.pending and not self.tcp_read_paused:
                self.tcp_read_paused = True
                tcp.pause_reading()
            elif not self.pending and self.tcp_read_paused:
                self.tcp_read_paused = False
                tcp.resume_reading()
        self._maybe_done()

    def tcp_lost(self, exc: Exception | None) -> None:
        if self.done:
            return
        self.tcp_eof = True
        if exc is not None or self.pending or not self.open:
            self._reset()
        else:
            self.flush()

    def tcp_pause_writing(self) -> None:
        self.tcp_write_paused = True

    def tcp_resume_writing(self) -> None:
        self.tcp_write_paused = False
        if self.unacked and self.link is not None:
            self.link.connection.ack(self.stream_id, self.unacked)
            self.unacked = 0
            self.link.flush()

    # -- the stream side --------------------------------------------------------------

    def stream_data(self, data: bytes, flow: int, end_stream: bool) -> None:
        assert self.link is not None
        tcp = self.tcp
        if tcp is None:
            self.held.append(data)
            self.unacked += flow  # given back once the TCP side takes it
        else:
            tcp.write(data)
            if self.tcp_write_paused:
                self.unacked += flow
            else:
                self.link.connection.ack(self.stream_id, flow)
        if end_stream:
            self.stream_eof = True
            if tcp is not None:
                _half_close(tcp)
        self._maybe_done()

    def stream_reset(self) -> None:
        if not self.open and not self.response.done():
            # Not tunnelled yet (the importing side): the connection may try another link.
            self.response.set_result(0)
            return
        self.done = True
        self.pending.clear()
        if self.tcp is not None:
            self.tcp.abort()
        if not self.response.done():
            self.response.set_result(0)

    def detach(self) -> None:
        """Leave a link whose stream never answered, to be tunnelled on another."""
        link = self.link
        if link is not None and self.stream_id:
            link.pipes.pop(self.stream_id, None)
            link.connection.reset(self.stream_id, CANCEL)
            link.flush()
        self.link = None
        self.stream_id = 0
        self.response = asyncio.get_running_loop().create_future()

    def _reset(self) -> None:
        link = self.link
        self.done = True
        if link is not None and self.stream_id:
            link.connection.reset(self.stream_id, CANCEL)
            link.pipes.pop(self.stream_id, None)
            link.flush()
        if self.tcp is not None:
            self.tcp.abort()

    def _maybe_done(self) -> None:
        """Both directions ended: the stream is closed, and so is the TCP connection."""
        if self.end_sent and self.stream_eof and not self.done:
            self.done = True
            if self.link is not None:
                self.link.pipes.pop(self.stream_id, None)
            if self.tcp is not None:
                self.tcp.close()


def _half_close(transport: asyncio.Transport) -> None:
    if transport.can_write_eof():
        transport.write_eof()
    else:
        transport.close()


@mypyc_attr(allow_interpreted_subclasses=True)
class TcpEnd(asyncio.Protocol):
    """The TCP side of a pipe (subclassed by the gateway's import ports, interpreted)."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe.attach(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.pipe.tcp_data(data)

    def eof_received(self) -> bool:
        self.pipe.tcp_eof_received()
        return True  # keep the other direction open (half-close)

    def pause_writing(self) -> None:
        self.pipe.tcp_pause_writing()

    def resume_writing(self) -> None:
        self.pipe.tcp_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.tcp_lost(exc)


# The exporting side's callback for each CONNECT: (link, stream id, service, source dc).
OnConnect = Callable[["LinkConnection", int, str, str], None]
# ... and for each GET: (link, stream id, path).
OnGet = Callable[["LinkConnection", int, str], None]
# The longest line a line stream (the export stream) may carry.
MAX_LINE = 1 << 20


class LinePipe(Pipe):
    """A stream read as newline-delimited lines (the export stream's importing side)."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        super().__init__()
        self.on_line = on_line
        self.buffer = bytearray()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def stream_data(self, data: bytes, flow: int, end_stream: bool) -> None:
        assert self.link is not None
        self.link.connection.ack(self.stream_id, flow)
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self.on_line(line)
        if len(self.buffer) > MAX_LINE:
            self._reset()
            self._end()
        elif end_stream:
            self._end()

    def stream_reset(self) -> None:
        super().stream_reset()
        self._end()

    def _end(self) -> None:
        if self.link is not None:
            self.link.pipes.pop(self.stream_id, None)
        if not self.ended.done():
            self.ended.set_result(None)


class _Events(Handler):
    def __init__(self, link: LinkConnection) -> None:
        self.link = link

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        self.link.headers(stream_id, headers, kind, end_stream)

    def stream_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool) -> None:
        pipe = self.link.pipes.get(stream_id)
        if pipe is None:
            self.link.connection.ack(stream_id, flow)
            return
        pipe.stream_data(data, flow, end_stream)

    def stream_reset(self, stream_id: int, code: int) -> None:
        pipe = self.link.pipes.pop(stream_id, None)
        if pipe is not None:
            pipe.stream_reset()

    def window_opened(self, stream_id: int) -> None:
        pipes = self.link.pipes
        if stream_id == 0:
            for pipe in list(pipes.values()):
                pipe.flush()
        else:
            one = pipes.get(stream_id)
            if one is not None:
                one.flush()

    def goaway_received(self, last_stream_id: int, code: int) -> None:
        self.link.going_away = True


class LinkConnection(asyncio.Protocol):
    """One link, either side: HTTP/2 on a mutual-TLS transport, carrying pipes."""

    def __init__(
        self,
        client: bool,
        timeout_s: float,
        on_connect: OnConnect | None = None,
        on_get: OnGet | None = None,
        ping_interval_s: float = 0.0,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        # Liveness: after this long without a byte from the peer, a PING; nothing read
        # ``timeout_s`` after it and the link is taken for dead (a frozen host, or a
        # network that dropped it without a reset) and closed. 0: off.
        self.ping_interval_s = ping_interval_s
        self.last_read = 0.0
        self.ping_sent = 0.0
        self.pings = 0
        self._ping_timer: asyncio.TimerHandle | None = None
        self.on_connect = on_connect
        self.on_get = on_get
        self.connection = Connection(_Events(self), client, link_settings())
        self.pipes: dict[int, Pipe] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.going_away = False
        # Set once the peer's SETTINGS arrived (the link is usable); once it is gone.
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    def peer(self) -> dict[str, str]:
        transport = self.transport
        if transport is None:
            return {}
        cert = transport.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in cert.get("subject", ()))
        return {
            "peer": str(transport.get_extra_info("peername")),
            "cn": str(subject.get("commonName", "")),
        }

    def usable(self) -> bool:
        return not self.closed and not self.going_away and self.connection.can_open()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout_s, self._too_slow)
        self.last_read = loop.time()
        if self.ping_interval_s > 0:
            self._ping_timer = loop.call_later(self.ping_interval_s, self._check_alive)
        self.flush()

    def _check_alive(self) -> None:
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.ping_sent and self.last_read <= self.ping_sent:
            if now - self.ping_sent >= self.timeout_s:
                log.warning(
                    "gateway link closed: no answer to a ping within %gs",
                    self.timeout_s,
                    extra=self.peer(),
                )
                if self.transport is not None:
                    self.transport.abort()
                return
            delay = self.ping_sent + self.timeout_s - now
        elif now - self.last_read >= self.ping_interval_s:
            self.connection.ping()
            self.flush()
            self.ping_sent = now
            self.pings += 1
            delay = self.timeout_s
        else:
            self.ping_sent = 0.0
            delay = self.last_read + self.ping_interval_s - now
        self._ping_timer = loop.call_later(delay, self._check_alive)

    def _too_slow(self) -> None:
        log.warning(
            "gateway link closed: no HTTP/2 settings within %gs", self.timeout_s, extra=self.peer()
        )
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_read = asyncio.get_running_loop().time()
        try:
            self.connection.receive(data)
        except ProtocolError as exc:
            log.warning("gateway link closed: %s", exc, extra=self.peer())
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        if not self.ready.done() and self.connection.peer_settings_received:
            self.ready.set_result(None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.flush()

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the link closed before its settings"))
            self.ready.exception()  # whoever awaits it still gets it; nobody else must
        pipes, self.pipes = self.pipes, {}
        for pipe in pipes.values():
            pipe.stream_reset()
        if not self.lost.done():
            self.lost.set_result(None)

    # -- streams -----------------------------------------------------------------------

    def headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        if kind != HEAD:
            return
        fields = dict(headers)
        if self.client:
            pipe = self.pipes.get(stream_id)
            if pipe is not None and not pipe.response.done():
                status = fields.get(b":status", b"0")
                pipe.response.set_result(int(status) if status.isdigit() else 0)
            return
        service = fields.get(b":authority", b"").decode("ascii", "replace")
        method = fields.get(b":method")
        if method == b"GET" and self.on_get is not None:
            self.on_get(self, stream_id, fields.get(b":path", b"").decode("ascii", "replace"))
            return
        if method != b"CONNECT" or self.on_connect is None:
            self.answer(stream_id, 405)
            return
        source = fields.get(SOURCE_DC, b"").decode("ascii", "replace")
        self.on_connect(self, stream_id, service, source)

    def answer(self, stream_id: int, status: int, end_stream: bool = True) -> None:
        try:
            self.connection.send_headers(
                stream_id, [(b":status", str(status).encode())], end_stream=end_stream
            )
        except StreamGone:
            return
        self.flush()

    def open_get(self, pipe: Pipe, path: str, source_dc: str) -> int:
        """A GET on the link (the export stream), read through ``pipe``."""
        stream_id = self.connection.open_stream()
        self.connection.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"meshagent-gateway"),
                (b":path", path.encode()),
                (SOURCE_DC, source_dc.encode()),
            ],
            end_stream=True,
        )
        pipe.link = self
        pipe.stream_id = stream_id
        pipe.end_sent = True
        self.pipes[stream_id] = pipe
        self.flush()
        return stream_id

    def open_tunnel(self, pipe: Pipe, service: str, source_dc: str) -> int:
        stream_id = self.connection.open_stream()
        self.connection.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":authority", service.encode()),
                (SOURCE_DC, source_dc.encode()),
            ],
        )
        pipe.link = self
        pipe.stream_id = stream_id
        self.pipes[stream_id] = pipe
        self.flush()
        return stream_id
