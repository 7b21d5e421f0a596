"""Keep-alive connections to providers, one h11 client state machine each.

A request picks its endpoint through the cluster first (balancing is per request, never
per client connection) and then takes an idle connection to that endpoint, or opens one.
Connect failures are passive health signals and move on to another endpoint while the
service's ``connect_attempts`` last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import h11

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import PickContext
from agent.config import ServiceConfig
from agent.errors import ConnectError, NoEndpointError

log = logging.getLogger(__name__)

# Bytes read from a provider per call (a body chunk is at most this).
READ_CHUNK = 64 * 1024


class UpstreamConnection:
    __slots__ = ("conn", "host", "idle_since", "reader", "reused", "writer")

    def __init__(self, host: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.host = host
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        # Taken from the idle list: the provider may have closed it meanwhile.
        self.reused = False

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(READ_CHUNK))
                continue
            if event is h11.PAUSED:
                # Only after a 101: the caller takes the raw stream from here.
                raise h11.RemoteProtocolError("unexpected pause", 502)
            assert isinstance(event, h11.Event)
            return event

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    def __init__(self, max_idle_per_endpoint: int, idle_timeout_s: float) -> None:
        self.max_idle = max_idle_per_endpoint
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}

    async def acquire(
        self,
        cluster: Cluster,
        service: ServiceConfig,
        *,
        fresh: bool = False,
        exclude: frozenset[str] = frozenset(),
        subset_out: frozenset[str] = frozenset(),
    ) -> UpstreamConnection:
        """A connection to an endpoint the cluster picks (none of ``exclude``, unless no
        other is left; never one of ``subset_out``, outside the call's traffic-splitting
        subset); ``fresh`` skips idle connections."""
        tried: set[str] = set(exclude) | subset_out
        errors: list[str] = []
        for _ in range(service.connect_attempts):
            host = cluster.choose(PickContext(None, frozenset(tried)))
            if host is None:
                break
            if not fresh:
                idle = self._take_idle(host)
                if idle is not None:
                    return idle
            tried.add(host.id)
            try:
                async with asyncio.timeout(service.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        host.instance.host, host.instance.port, limit=2 * READ_CHUNK
                    )
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                errors.append(f"{host.id}: {reason or type(exc).__name__}")
                log.warning(
                    "upstream connect failed",
                    extra={"cluster": cluster.name, "endpoint": host.id, "error": reason},
                )
                cluster.report_failure(host, connect=True)
                continue
            return UpstreamConnection(host, reader, writer)
        if not errors and exclude:
            # Every endpoint has been tried by earlier tries: one of them again beats none.
            return await self.acquire(cluster, service, fresh=fresh, subset_out=subset_out)
        if not errors:
            raise NoEndpointError(f"no endpoint available for service {cluster.name!r}")
        raise ConnectError(f"could not connect to service {cluster.name!r}: " + "; ".join(errors))

    def _take_idle(self, host: Host) -> UpstreamConnection | None:
        idle = self._idle.get(_key(host))
        deadline = time.monotonic() - self.idle_timeout_s
        while idle:
            connection = idle.pop()
            # EOF (or anything unsolicited) while idle: the provider is done with it.
            if connection.idle_since < deadline or connection.reader.at_eof():
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    def release(self, connection: UpstreamConnection) -> None:
        """Keep ``connection`` for the next request if its exchange ended cleanly."""
        if not connection.reusable or connection.writer.is_closing():
            connection.close()
            return
        idle = self._idle.setdefault(_key(connection.host), [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.conn.start_next_cycle()
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def close(self) -> None:
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def _key(host: Host) -> tuple[str, int]:
    return (host.instance.host, host.instance.port)
