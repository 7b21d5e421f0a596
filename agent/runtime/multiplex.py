"""Multiplexed upstream connections, whatever the protocol: many requests in flight on one
connection, each under a request id the connection assigns, answers matched back by id.

Dubbo and Thrift (and any protocol whose messages carry an id) share this; the protocol
supplies a :class:`MultiplexCodec`: how to write a request under an id, a sans-IO decoder
of the provider's messages, how to read an answer's id, what to do with a message that is
not an answer (Dubbo's heartbeats and READONLY events), an optional keep-alive message,
and the error its callers see when the connection is lost.

What the pool does for every protocol:

- **connect once**: concurrent callers for the same endpoint share one connect attempt;
- **pending by id**: ``send`` registers a waiter (a plain callback, no future: the
  proxies' hot path) and the answer with that id calls it; ``cancel`` drops a waiter whose
  caller gave up, so a late answer is discarded;
- **fail all on close**: a lost connection, or a malformed message from the provider
  (the stream cannot be read on), calls every waiter with the protocol's error;
- **timeouts** for ``request`` (the awaitable path of the JSON invokers); the proxies keep
  their deadlines with :class:`agent.runtime.deadlines.Deadlines`, one timer per client;
- **backpressure**: ``writable`` / ``when_writable`` follow the socket's high-water mark;
- **write coalescing** through a :class:`WriteBatch` shared with the listeners;
- **several connections per endpoint** (``connections_per_endpoint``), so one slow call
  does not hold up the calls queued behind it on the same connection (Thrift and Dubbo
  servers answer a connection's calls in order). The pool grows on demand: a call that
  finds every connection busy and fewer than the maximum open opens another; at the
  maximum, calls are spread ``least_pending`` (default) or ``round_robin``;
- **draining**: a connection the provider said it is leaving (Dubbo READONLY) gets no new
  requests; those in flight still get their answers;
- **keep-alive**: an idle connection sends the protocol's keep-alive message.

Endpoints are keyed by address and a protocol-defined ``kind`` (Thrift: the wire form,
since a provider port speaks one protocol and transport; Dubbo: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from typing import ClassVar, Generic, Literal, Protocol, TypeVar, cast

from mypy_extensions import mypyc_attr

from agent.cluster.host import Host
from agent.codec import NEED_DATA, NeedData
from agent.errors import ConnectError, RemoteProtocolError, UpstreamError, UpstreamTimeout
from agent.runtime.writebatch import WriteBatch, write_all

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ResponseT_co = TypeVar("ResponseT_co", covariant=True)

Pick = Literal["least_pending", "round_robin"]

# After a connect that would have grown an endpoint's connections fails, the endpoint is
# not grown again for this long: a provider that caps its connections must not cost a
# failed connect per busy moment. Its existing connections carry the calls meanwhile.
GROW_BACKOFF_S = 1.0


# How long a provider's address stays out of the choice after the connection on which it
# said it is going away (Dubbo's READONLY) is closed: its process exits meanwhile.
DRAINED_FORGET_S = 10.0


class ResponseDecoder(Protocol[ResponseT_co]):
    """The sans-IO decoder of what a provider sends (see agent.codec)."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> ResponseT_co | NeedData: ...


# Compiled (agent/compiled.py); protocols and the tests subclass it from interpreted code.
@mypyc_attr(allow_interpreted_subclasses=True)
class MultiplexCodec(ABC, Generic[RequestT, ResponseT]):
    """What a protocol tells the pool. One instance per endpoint kind; it holds no
    per-connection state (``decoder`` makes that)."""

    # Ids run 1..max_id, then start over at 1. ClassVars, so that compiled code reads a
    # subclass's value (an instance attribute's default would be the base's).
    max_id: ClassVar[int] = 2**31 - 1
    # For log lines: what one message of this protocol is called.
    unit: ClassVar[str] = "message"

    @abstractmethod
    def decoder(self) -> ResponseDecoder[ResponseT]:
        """A fresh decoder for one connection's incoming bytes."""

    @abstractmethod
    def encode(self, request: RequestT, request_id: int) -> bytes:
        """The request's wire bytes under ``request_id``."""

    @abstractmethod
    def response_id(self, response: ResponseT) -> int | None:
        """The id of the request ``response`` answers; None if it answers none (an event
        of the provider's own, handed to :meth:`on_message`)."""

    def on_message(
        self, connection: MultiplexConnection[RequestT, ResponseT], message: ResponseT
    ) -> None:
        """A message from the provider that answers no request. Dropped by default."""

    def keepalive(self, request_id: int) -> bytes | None:
        """The message an idle connection sends (None: the protocol has none)."""
        return None

    def lost(self, reason: str) -> UpstreamError:
        """The error the waiters of a lost connection get."""
        return UpstreamError(reason)


# Called once per request with the provider's answer, or the error that ended the wait.
Waiter = Callable[[ResponseT | UpstreamError], None]


class MultiplexConnection(asyncio.Protocol, Generic[RequestT, ResponseT]):
    """One connection to a provider carrying many requests at once."""

    def __init__(
        self,
        host: Host,
        codec: MultiplexCodec[RequestT, ResponseT],
        batch: WriteBatch | None = None,
    ) -> None:
        self.host = host
        self.codec = codec
        self._encode = codec.encode
        self._response_id = codec.response_id
        self._max_id = codec.max_id
        self.decoder = codec.decoder()
        # Shared with the pool's other connections and its listeners (see WriteBatch).
        self.batch = batch if batch is not None else WriteBatch()
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, Waiter[ResponseT]] = {}
        self._last_id = 0
        # True until connected, and from the provider's EOF on: nothing may be sent.
        self.closed = True
        self.draining = False
        self.lost = False
        self.close_reason = ""
        self.writable = True
        self._on_writable: list[Callable[[], None]] = []
        self.last_read = 0.0
        # Set by the pool: told when this connection can take no new requests.
        self.on_unusable: Callable[[MultiplexConnection[RequestT, ResponseT]], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        # Kept: asyncio.get_running_loop() costs a getpid() syscall per call on Linux.
        self._loop = asyncio.get_running_loop()
        self.last_read = self._loop.time()
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.last_read = self._loop.time()
        decoder = self.decoder
        decoder.receive_data(data)
        batch = self.batch
        outer = not batch.active
        batch.active = True
        try:
            next_event = decoder.next_event
            response_id = self._response_id
            while (event := next_event()) is not NEED_DATA:
                # Not NEED_DATA, so a response (no cast(): a call per message on the hot path).
                response: ResponseT = event  # type: ignore[assignment]
                request_id = response_id(response)
                if request_id is None:
                    self.codec.on_message(self, response)
                    continue
                waiter = self.pending.pop(request_id, None)
                if waiter is not None:
                    waiter(response)
        except RemoteProtocolError as exc:
            log.warning(
                "provider sent a malformed %s; closing: %s",
                self.codec.unit,
                exc,
                extra={"endpoint": self.host.id},
            )
            self._unusable()
            self._fail_all(f"malformed {self.codec.unit} from provider {self.host.id}: {exc}")
            self._out.clear()
            assert self.transport is not None
            self.transport.abort()
        finally:
            if outer:
                batch.finish()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        callbacks, self._on_writable = self._on_writable, []
        for callback in callbacks:
            callback()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the write buffer drains (or the connection is gone)."""
        if self.writable:
            callback()
        else:
            self._on_writable.append(callback)

    def eof_received(self) -> bool | None:
        # The provider closed its side: nothing new may go out from now on, even before
        # connection_lost runs (a request written now would be lost for sure).
        self._unusable()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.draining:
            # The provider closed the connection it said READONLY on: its process is about
            # to exit, and still accepts connections meanwhile (a request sent on a new one
            # would be reset). Its address is left for DRAINED_FORGET_S more, long enough
            # for the exit; then whatever answers there (a restart) starts fresh. A
            # registry that drops the provider, or lists it anew, makes this moot.
            self._loop.call_later(DRAINED_FORGET_S, self.host.set_draining, False)
        self._unusable()
        self._fail_all(self.close_reason or f"connection to {self.host.id} lost: {exc or 'closed'}")
        self.resume_writing()  # wake writers and paused clients: they will see `closed`

    def _unusable(self) -> None:
        self.closed = True
        if self.on_unusable is not None:
            self.on_unusable(self)

    def _fail_all(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        pending, self.pending = self.pending, {}
        if pending:
            error = self.codec.lost(self.close_reason)
            for waiter in pending.values():
                waiter(error)

    def drain(self) -> None:
        """The provider is going away: no new requests here, nor to its host on any path
        (``Host.draining``) while this process lives; those in flight finish."""
        if not self.draining:
            self.draining = True
            log.info("provider is going away; draining", extra={"endpoint": self.host.id})
            self.host.set_draining(True)
            if self.on_unusable is not None:
                self.on_unusable(self)

    # -- writes ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write raw bytes (a codec's answer to a provider's event); batched in a read."""
        batch = self.batch
        if batch.active:
            out = self._out
            if not out:
                batch.dirty.append(self)
            out.append(data)
        else:
            assert self.transport is not None
            self.transport.write(data)

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            write_all(transport, out)
        # else: lost while queued; connection_lost fails the waiters of these requests.

    def _free_id(self, request_id: int) -> int:
        """The next id from ``request_id`` on that no request in flight holds (after the
        ids wrap, a long-waiting request may still hold a small one)."""
        pending = self.pending
        if len(pending) >= self._max_id:
            raise UpstreamError(f"all {self._max_id} request ids of {self.host.id} in flight")
        while True:
            if request_id > self._max_id:
                request_id = 1
            if request_id not in pending:
                return request_id
            request_id += 1

    def _next_id(self) -> int:
        """An id for a message nobody waits for (still unique among those in flight: a
        keep-alive's answer must not be taken for a request's)."""
        request_id = self._last_id + 1
        if request_id > self._max_id or request_id in self.pending:
            request_id = self._free_id(request_id)
        self._last_id = request_id
        return request_id

    # -- requests ----------------------------------------------------------------------

    def closed_error(self) -> UpstreamError:
        return self.codec.lost(self.close_reason or f"connection to {self.host.id} is closed")

    def send(self, request: RequestT, waiter: Waiter[ResponseT]) -> int:
        """Send a request under a fresh id (returned); ``waiter`` gets the answer. The caller
        minds backpressure (``writable``) and its own deadline (``cancel``)."""
        if self.closed:
            raise self.closed_error()
        pending = self.pending
        request_id = self._last_id + 1
        if request_id > self._max_id or request_id in pending:
            request_id = self._free_id(request_id)
        self._last_id = request_id
        pending[request_id] = waiter
        self.write(self._encode(request, request_id))
        return request_id

    def send_oneway(self, request: RequestT) -> None:
        """Send a request nobody waits for (it still takes an id: ids stay unique)."""
        if self.closed:
            raise self.closed_error()
        self.write(self._encode(request, self._next_id()))

    def cancel(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (timed out): a late answer is dropped."""
        self.pending.pop(request_id, None)

    async def request(self, request: RequestT, timeout_s: float) -> ResponseT:
        """Send a request and await its answer, within ``timeout_s`` (UpstreamTimeout)."""
        if self.closed:
            raise self.closed_error()
        loop = self._loop  # asyncio.get_running_loop() would cost a getpid() per request
        if not self.writable:
            # Backpressure (rare): wait while the provider's socket buffer is over high
            # water, within the same deadline.
            deadline = loop.time() + timeout_s
            drained: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not drained.done():
                    drained.set_result(None)

            self.when_writable(wake)
            try:
                async with asyncio.timeout_at(deadline):
                    await drained
            except TimeoutError:
                raise self._timed_out(timeout_s) from None
            timeout_s = max(0.0, deadline - loop.time())
            if self.closed:
                raise self.closed_error()
        future: asyncio.Future[ResponseT] = loop.create_future()

        def settle(outcome: ResponseT | UpstreamError) -> None:
            if future.done():
                return
            if isinstance(outcome, UpstreamError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        # One timer that fails the waiter, not a timeout scope around the await: this runs
        # per request, and a scope costs a task lookup, a handle and its bookkeeping more.
        def expire() -> None:
            settle(self._timed_out(timeout_s))

        timer = loop.call_later(timeout_s, expire)
        request_id = 0
        try:
            request_id = self.send(request, settle)
            return await future
        finally:
            timer.cancel()
            if request_id:
                self.pending.pop(request_id, None)

    def _timed_out(self, timeout_s: float) -> UpstreamTimeout:
        return UpstreamTimeout(f"{self.host.id} did not answer within {timeout_s * 1000:.0f} ms")

    def send_keepalive(self) -> None:
        if self.closed:
            return
        message = self.codec.keepalive(self._next_id())
        if message is not None:
            self.write(message)

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.close_reason = self.close_reason or "connection closed by the agent"
            self._unusable()
            self.flush()
            self.transport.close()


class _Endpoint(Generic[RequestT, ResponseT]):
    """The connections to one address and kind."""

    __slots__ = ("connecting", "connections", "grow_after", "turn")

    def __init__(self) -> None:
        # Usable connections only (open, not draining), in the order they were made.
        self.connections: list[MultiplexConnection[RequestT, ResponseT]] = []
        self.connecting: asyncio.Future[MultiplexConnection[RequestT, ResponseT]] | None = None
        self.turn = 0
        self.grow_after = 0.0


class MultiplexPool(Generic[RequestT, ResponseT]):
    """Connections to providers, made on first use, replaced when they die, up to
    ``connections_per_endpoint`` per address and kind."""

    def __init__(
        self,
        codec_for: Callable[[Hashable], MultiplexCodec[RequestT, ResponseT]],
        *,
        connect_timeout_s: float = 1.0,
        connections_per_endpoint: int = 1,
        pick: Pick = "least_pending",
        keepalive_s: float | None = None,
    ) -> None:
        if connections_per_endpoint < 1:
            raise ValueError("connections_per_endpoint must be at least 1")
        self._codec_for = codec_for
        self._codecs: dict[Hashable, MultiplexCodec[RequestT, ResponseT]] = {}
        self.connect_timeout_s = connect_timeout_s
        self.per_endpoint = connections_per_endpoint
        self.round_robin = pick == "round_robin"
        self.keepalive_s = keepalive_s
        self.batch = WriteBatch()
        self._endpoints: dict[tuple[str, int, Hashable], _Endpoint[RequestT, ResponseT]] = {}
        # Every connection not yet lost, draining ones included (closed on close()).
        self._open: set[MultiplexConnection[RequestT, ResponseT]] = set()
        self._keepalive: asyncio.Task[None] | None = None

    def codec(self, kind: Hashable = None) -> MultiplexCodec[RequestT, ResponseT]:
        codec = self._codecs.get(kind)
        if codec is None:
            codec = self._codecs[kind] = self._codec_for(kind)
        return codec

    def connections(self) -> list[MultiplexConnection[RequestT, ResponseT]]:
        """Every open connection, draining ones included."""
        return list(self._open)

    def open_to(self, hosts: Iterable[Host]) -> int:
        """How many connections that take requests are open to ``hosts`` (any kind)."""
        addresses = {(host.instance.host, host.instance.port) for host in hosts}
        return sum(
            len(endpoint.connections)
            for (address, port, _kind), endpoint in self._endpoints.items()
            if (address, port) in addresses
        )

    def usable(
        self, host: Host, kind: Hashable = None
    ) -> list[MultiplexConnection[RequestT, ResponseT]]:
        """The connections to ``host`` that take new requests."""
        endpoint = self._endpoints.get((host.instance.host, host.instance.port, kind))
        return list(endpoint.connections) if endpoint is not None else []

    def live(
        self, host: Host, kind: Hashable = None
    ) -> MultiplexConnection[RequestT, ResponseT] | None:
        """A usable connection to ``host``, or None when the caller should ``get`` one
        (none open yet, or all busy while the endpoint may still grow): the synchronous
        fast path."""
        endpoint = self._endpoints.get((host.instance.host, host.instance.port, kind))
        if endpoint is None:
            return None
        connections = endpoint.connections
        count = len(connections)
        if count >= self.per_endpoint:
            if count == 1:
                return connections[0]
            return self._pick(endpoint)
        if count == 0:
            return None
        best = self._least_pending(connections)
        if best.pending and endpoint.grow_after <= best._loop.time():
            return None  # every connection is busy: grow rather than queue behind them
        return best

    def _pick(
        self, endpoint: _Endpoint[RequestT, ResponseT]
    ) -> MultiplexConnection[RequestT, ResponseT]:
        connections = endpoint.connections
        if self.round_robin:
            turn = endpoint.turn + 1
            if turn >= len(connections):
                turn = 0
            endpoint.turn = turn
            return connections[turn]
        return self._least_pending(connections)

    @staticmethod
    def _least_pending(
        connections: list[MultiplexConnection[RequestT, ResponseT]],
    ) -> MultiplexConnection[RequestT, ResponseT]:
        best = connections[0]
        least = len(best.pending)
        for connection in connections:
            if len(connection.pending) < least:
                best, least = connection, len(connection.pending)
        return best

    async def get(
        self, host: Host, kind: Hashable = None
    ) -> MultiplexConnection[RequestT, ResponseT]:
        """A usable connection to ``host``, connecting one if the endpoint has none (or
        all busy and fewer than the maximum). Raises ConnectError."""
        connection = self.live(host, kind)
        if connection is not None:
            return connection
        key = (host.instance.host, host.instance.port, kind)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint()
        # Concurrent callers share one connect attempt instead of opening several.
        waiting = endpoint.connecting
        if waiting is not None:
            return await asyncio.shield(waiting)
        loop = asyncio.get_running_loop()
        attempt: asyncio.Future[MultiplexConnection[RequestT, ResponseT]] = loop.create_future()
        endpoint.connecting = attempt
        try:
            try:
                connection = await self._connect(host, kind)
            except ConnectError:
                if not endpoint.connections:
                    raise
                # Growing failed, but the endpoint has connections: use them for now.
                endpoint.grow_after = loop.time() + GROW_BACKOFF_S
                log.info(
                    "extra connection to provider failed; using the open ones",
                    extra={"endpoint": host.id, "connections": len(endpoint.connections)},
                )
                connection = self._least_pending(endpoint.connections)
        except BaseException as exc:
            attempt.set_exception(exc)
            attempt.exception()  # retrieved: no "never retrieved" warning when unshared
            raise
        finally:
            endpoint.connecting = None
        attempt.set_result(connection)
        return connection

    async def _connect(
        self, host: Host, kind: Hashable
    ) -> MultiplexConnection[RequestT, ResponseT]:
        loop = asyncio.get_running_loop()
        codec = self.codec(kind)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _transport, connection = await loop.create_connection(
                    lambda: MultiplexConnection(host, codec, self.batch),
                    host.instance.host,
                    host.instance.port,
                )
        except TimeoutError:
            raise ConnectError(f"connect to {host.id} timed out") from None
        except OSError as exc:
            raise ConnectError(f"connect to {host.id} failed: {exc.strerror or exc}") from None
        except ValueError as unresolvable:  # a host the resolver refuses (IDNA's UnicodeError)
            raise ConnectError(f"connect to {host.id} failed: {unresolvable}") from None
        self.add(connection, kind)
        return connection

    def add(
        self, connection: MultiplexConnection[RequestT, ResponseT], kind: Hashable = None
    ) -> None:
        """Take a connected connection into the pool (the pool's own connects, and
        in-process rigs that connect a protocol instance to a transport themselves)."""
        host = connection.host
        key = (host.instance.host, host.instance.port, kind)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint()
        endpoint.connections.append(connection)
        self._open.add(connection)

        def unusable(gone: MultiplexConnection[RequestT, ResponseT]) -> None:
            with contextlib.suppress(ValueError):
                endpoint.connections.remove(gone)
            if gone.lost:
                self._open.discard(gone)

        connection.on_unusable = unusable
        if self.keepalive_s is not None and self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        assert self.keepalive_s is not None
        interval = self.keepalive_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            for connection in list(self._open):
                if not connection.closed and now - connection.last_read >= interval:
                    connection.send_keepalive()

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._endpoints.clear()
