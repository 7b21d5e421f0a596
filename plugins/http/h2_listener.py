"""HTTP/2 from clients on the HTTP listener: prior knowledge and the h2c upgrade.

h2 runs the connection (framing, HPACK, flow control); each stream is one request,
routed and balanced on its own and forwarded to the provider over pooled HTTP/1.1
connections (the same path as HTTP invocation), so one multiplexed client connection is
spread over every endpoint. Bodies stream both ways under HTTP/2 flow control: a request
chunk's window is given back only once the provider's connection took it, and a response
chunk is sent only within the client's window.

Defenses (the 2023 rapid-reset attack, CVE-2023-44487, and control-frame floods; the
counters in plugins/http/h2_floods.py, shared with the gRPC h2 relay): at most
``h2_max_concurrent_streams`` open streams (h2 refuses more); streams the client resets,
and SETTINGS and PING frames, are counted per second, and past ``h2_max_resets_per_s`` /
``h2_max_control_frames_per_s`` the connection gets GOAWAY (ENHANCE_YOUR_CALM) and is
closed, with a log line. Replies h2 queues (SETTINGS and PING ACKs) are flushed with an
awaited drain before more is read, so a client that does not read stops being read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from agent.calls import CallRejected, Outcome
from agent.errors import NoEndpointError, UpstreamError, UpstreamTimeout
from plugins.http.calls import chain_of, outcome_of_status, refusal
from plugins.http.h2_floods import FloodGuard
from plugins.http.headers import PROPAGATED, Headers, end_to_end, forwarding
from plugins.http.invoker import forward
from plugins.http.routing import problem_body

if TYPE_CHECKING:
    from plugins.http.h1_session import _Session

log = logging.getLogger(__name__)

# How long a connection refused for a protocol error still reads before it closes.
_LINGER_S = 1.0

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def upgrade_settings_problem(value: bytes) -> str | None:
    """Why an ``HTTP2-Settings`` header cannot start an h2c upgrade, or None.

    RFC 9113 3.2.1 (7540 3.2.1): base64url, no padding, of a SETTINGS frame's payload;
    checked before the 101 is sent, so a bad one gets 400 instead of a connection that
    switches protocol and then fails."""
    try:
        standard = value.translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(value) % 4)
        payload = base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        return "HTTP2-Settings is not base64url"
    if len(payload) % 6:
        return "HTTP2-Settings is not a sequence of 6-byte settings"
    for offset in range(0, len(payload), 6):
        setting, number = struct.unpack_from(">HI", payload, offset)
        if setting == 0x2 and number > 1:
            return f"HTTP2-Settings: ENABLE_PUSH {number}"
        if setting == 0x4 and number > 2**31 - 1:
            return f"HTTP2-Settings: INITIAL_WINDOW_SIZE {number}"
        if setting == 0x5 and not 2**14 <= number <= 2**24 - 1:
            return f"HTTP2-Settings: MAX_FRAME_SIZE {number}"
    return None


# Past this many bytes waiting in the client socket's buffer, a stream's flush writes and
# waits for the buffer to drain (asyncio's default high-water mark).
_WRITE_BUFFER_HIGH = 64 * 1024


class _Stream:
    __slots__ = ("body", "ended", "task")

    def __init__(self) -> None:
        # (chunk, flow-controlled length); None ends the body.
        self.body: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        # The client's END_STREAM arrived: its half of the stream is done.
        self.ended = False


class H2Session:
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.config = session.config
        self.writer = session.writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        # Before initiate_connection, so that the first SETTINGS frame carries them.
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: (
                    self.config.h2_max_concurrent_streams
                ),
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.config.max_header_bytes,
            },
        )
        self.streams: dict[int, _Stream] = {}
        # Set whenever the client opens flow-control windows; senders wait on it.
        self.window_opened = asyncio.Event()
        self.floods = FloodGuard(
            self.config.h2_max_resets_per_s, self.config.h2_max_control_frames_per_s
        )
        self.closing = False
        # A write of h2's queued bytes is due on the loop's next turn (flush()).
        self.write_scheduled = False
        # GOAWAY sent for a drain: streams up to ``last_stream`` finish, no new ones.
        self.draining = False
        self.last_stream = 0

    def drain(self) -> None:
        """Graceful GOAWAY (NO_ERROR, RFC 9113 6.8): the streams open finish, then the
        connection closes; streams the client opens after it are refused.

        Written beside h2 rather than through ``close_connection``, which would close h2's
        state machine to the open streams' remaining frames.
        """
        if self.draining or self.closing:
            return
        self.draining = True
        self.last_stream = self.h2.highest_inbound_stream_id
        goaway = hyperframe.frame.GoAwayFrame(0, last_stream_id=self.last_stream, error_code=0)
        data = self.h2.data_to_send() + goaway.serialize()
        self.session.context.stats.bytes_out += len(data)
        self.writer.write(data)
        if not self.streams:
            self.writer.close()

    async def _linger(self) -> None:
        """After a connection error's GOAWAY: end our side (FIN) and read what the client
        still sends, for at most a second, before closing. Closed at once with unread
        bytes in its buffer, the socket would answer with a reset, which can reach the
        client before the GOAWAY does (nginx's lingering close, for the same reason)."""
        reader = self.session.reader
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                while await reader.read(self.config.read_chunk_bytes):
                    pass

    async def flush(self, now: bool = False) -> None:
        """Send what h2 has queued. Streams' flushes are coalesced: the bytes go out once
        per turn of the loop (one send for every stream answered in it, rather than two
        or three per stream), unless the socket's buffer is already full, when the
        stream waits for it like any writer. ``now``: write at once (the read loop, and
        before a close)."""
        if not now and self.writer.transport.get_write_buffer_size() < _WRITE_BUFFER_HIGH:
            if not self.write_scheduled:
                self.write_scheduled = True
                asyncio.get_running_loop().call_soon(self._write_queued)
            return
        self._write_queued()
        await self.writer.drain()

    def _write_queued(self) -> None:
        self.write_scheduled = False
        if self.writer.is_closing():
            return
        data = self.h2.data_to_send()
        if data:
            self.session.context.stats.bytes_out += len(data)
            self.writer.write(data)

    async def run(
        self, received: bytes, upgrade: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
    ) -> None:
        """Serve until the connection ends. ``upgrade``: the HTTP2-Settings value and the
        HTTP/1.1 request (as HTTP/2 headers) that asked for h2c, answered on stream 1."""
        if upgrade is None:
            self.h2.initiate_connection()
        else:
            self.h2.initiate_upgrade_connection(upgrade[0])
            self._start_stream(1, upgrade[1], has_body=False)
        await self.flush(now=True)
        reader = self.session.reader
        try:
            while not self.closing:
                if not received:
                    received = await reader.read(self.config.read_chunk_bytes)
                    if not received:
                        return
                try:
                    events = self.h2.receive_data(received)
                except h2.exceptions.ProtocolError as exc:
                    self._refuse(f"HTTP/2 protocol error: {exc}", _error_code(exc))
                    await self.flush(now=True)
                    await self._linger()
                    return
                received = b""
                for event in events:
                    self._on_event(event)
                await self.flush(now=True)
        finally:
            for stream in self.streams.values():
                if stream.task is not None:
                    stream.task.cancel()
            tasks = [s.task for s in self.streams.values() if s.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _refuse(self, reason: str, code: int = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM) -> None:
        log.warning(
            "http/2 connection refused: %s",
            reason,
            extra={
                "listener": self.session.context.listener.display_name,
                "client": self.session.client_ip,
            },
        )
        self.session.context.stats.rejected += 1
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self.closing = True

    def _on_event(self, event: h2.events.Event) -> None:
        if self.closing:
            return
        if isinstance(event, h2.events.RequestReceived):
            if self.draining and (event.stream_id or 0) > self.last_stream:
                # Opened after our GOAWAY: safe for the client to retry elsewhere.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.reset_stream(event.stream_id or 0, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            headers = [(bytes(n), bytes(v)) for n, v in event.headers or []]
            self._start_stream(event.stream_id, headers, has_body=event.stream_ended is None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            length = event.flow_controlled_length or 0
            if stream is not None and event.data is not None:
                stream.body.put_nowait((event.data, length))
            elif length and event.stream_id is not None:
                # A stream already answered: nobody will read this, but the connection's
                # window must be given back, or every other stream would stall.
                self.h2.acknowledge_received_data(length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.body.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
            flood = self.floods.check(event)
            if flood is not None:
                self._refuse(flood)
        elif isinstance(event, h2.events.RemoteSettingsChanged | h2.events.PingReceived):
            flood = self.floods.check(event)
            if flood is not None:
                self._refuse(flood)
            self.window_opened.set()  # a new initial window size may open streams
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_opened.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closing = True

    def _start_stream(self, stream_id: int, headers: Headers, has_body: bool) -> None:
        stream = _Stream()
        if not has_body:
            stream.ended = True
            stream.body.put_nowait(None)
        self.streams[stream_id] = stream
        stream.task = asyncio.get_running_loop().create_task(
            self._serve_stream(stream_id, stream, headers, has_body)
        )

    async def _serve_stream(
        self, stream_id: int, stream: _Stream, headers: Headers, has_body: bool
    ) -> None:
        try:
            await self._handle_stream(stream_id, stream, headers, has_body)
        except asyncio.CancelledError:
            # Reset by the client, or the connection is going: nothing more to send.
            self.streams.pop(stream_id, None)
            raise
        self.streams.pop(stream_id, None)
        self._return_unread(stream_id, stream)
        last = self.draining and not self.streams
        with contextlib.suppress(ConnectionError):
            await self.flush(now=last)
        if last:
            self.writer.close()  # the last stream before the GOAWAY is answered

    async def _handle_stream(
        self, stream_id: int, stream: _Stream, headers: Headers, has_body: bool
    ) -> None:
        session = self.session
        context = session.context
        context.stats.requests += 1
        pseudo = {name: value for name, value in headers if name.startswith(b":")}
        regular = [(name, value) for name, value in headers if not name.startswith(b":")]
        method = pseudo.get(b":method", b"GET")
        path = pseudo.get(b":path", b"")
        authority = pseudo.get(b":authority") or next((v for n, v in regular if n == b"host"), None)
        target = session.owner.router.route(authority, path)
        name = target.service.name
        context.stats.route(name).requests += 1
        try:
            if method == b"CONNECT" or not path:
                await self._problem(stream_id, 501, "CONNECT is not supported", name)
                return
            size = sum(len(n) + len(v) + 32 for n, v in headers)
            if size > self.config.max_header_bytes:
                await self._problem(stream_id, 431, f"header list of {size} bytes", name)
                return
            outgoing = [(n, v) for n, v in end_to_end(regular) if n != b"host"]
            incoming = {
                n.decode("latin-1"): v.decode("latin-1") for n, v in regular if n in PROPAGATED
            }
            try:
                call = context.calls.start(
                    "http",
                    context.direction,
                    session.owner.router.call_routes.route(name, method),
                    incoming,
                )
            except CallRejected as exc:
                await self._answer(stream_id, *refusal(exc, name))
                return
            config = self.config
            if config.x_forwarded or config.forwarded:
                outgoing = forwarding(
                    outgoing, config.x_forwarded, config.forwarded, session.client_ip, authority
                )
            try:
                result = await forward(
                    session.owner.pool,
                    target,
                    method,
                    path,
                    outgoing,
                    authority,
                    has_body,
                    self._request_body(stream_id, stream),
                    call,
                )
            except UpstreamError as exc:
                status = 502
                if isinstance(exc, UpstreamTimeout):
                    status = 504
                elif isinstance(exc, NoEndpointError):
                    status = 503
                call.fail(exc, str(status))
                log.warning("http/2 request not forwarded: %s", exc, extra={"service": name})
                body = problem_body(status, str(exc), name, chain_of(call))
                await self._answer(stream_id, status, b"application/problem+json", body)
                return
            except BaseException as exc:
                call.fail(exc)
                raise
            try:
                response = [(b":status", str(result.status).encode())]
                response += [(n.lower(), v) for n, v in result.headers]
                self.h2.send_headers(stream_id, response)
                await self.flush()
                async for chunk in result.body:
                    await self._send_data(stream_id, chunk)
                self.h2.end_stream(stream_id)
                await self.flush()
                call.finish(outcome_of_status(result.status), str(result.status))
            finally:
                # Not finished above: the client reset the stream or the provider cut it.
                call.finish(Outcome.UPSTREAM_ERROR, str(result.status))
                await result.close()
        except (h2.exceptions.StreamClosedError, ConnectionError):
            pass  # the client reset the stream or went away: nothing to tell it
        except h2.exceptions.ProtocolError as exc:
            log.warning("http/2 stream failed: %s", exc, extra={"service": name})
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except Exception as exc:
            # Mid-response failures (the provider cut the body): reset this stream only.
            log.warning("http/2 stream failed: %s", exc, extra={"service": name})
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            with contextlib.suppress(ConnectionError):
                await self.flush()

    def _return_unread(self, stream_id: int, stream: _Stream) -> None:
        """Give back the connection window of body data the stream left unread, and ask a
        client still sending to stop (RST_STREAM NO_ERROR after a complete response, RFC
        9113 8.1)."""
        if not stream.ended and not self.closing:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        unread = 0
        while not stream.body.empty():
            item = stream.body.get_nowait()
            if item is not None:
                unread += item[1]
        if unread and not self.closing:
            self.h2.acknowledge_received_data(unread, stream_id)

    async def _request_body(self, stream_id: int, stream: _Stream) -> AsyncIterator[bytes]:
        while (item := await stream.body.get()) is not None:
            chunk, flow_length = item
            yield chunk
            # The provider's connection took it: the client may send that much more.
            if flow_length and stream_id in self.streams:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.h2.acknowledge_received_data(flow_length, stream_id)
                await self.flush()

    async def _send_data(self, stream_id: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            window = self.h2.local_flow_control_window(stream_id)
            if window <= 0:
                self.window_opened.clear()
                await self.window_opened.wait()
                continue
            size = min(window, len(view), self.h2.max_outbound_frame_size)
            self.h2.send_data(stream_id, view[:size].tobytes())
            view = view[size:]
            await self.flush()

    async def _problem(self, stream_id: int, status: int, detail: str, service: str) -> None:
        body = problem_body(status, detail, service)
        await self._answer(stream_id, status, b"application/problem+json", body)

    async def _answer(self, stream_id: int, status: int, content_type: bytes, body: bytes) -> None:
        """An answer of the agent's own (problem details, a fallback value)."""
        if status >= 400:
            self.session.context.stats.request_errors += 1
        self.h2.send_headers(
            stream_id,
            [
                (b":status", str(status).encode()),
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        await self._send_data(stream_id, body)
        self.h2.end_stream(stream_id)
        await self.flush()


def _error_code(exc: h2.exceptions.ProtocolError) -> int:
    code = getattr(exc, "error_code", None)
    return int(code) if code is not None else int(h2.errors.ErrorCodes.PROTOCOL_ERROR)
