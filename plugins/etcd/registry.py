"""The etcd registry: one connection, one watch stream for every service, one lease.

A supervisor task owns the connection. Each session (one successful connect) checks the
lease and re-puts what needs it, then runs three things until any of them fails: the watch
stream reader, the lease keeper, and the watch (re)starts of the services. When the session
ends (server gone, stream closed, a call timed out) the last known instances stay, status
says since when we are disconnected, and the supervisor reconnects with backoff and jitter,
trying the endpoints in turn. Watches resume from the revision after the last one applied;
a resume below a compaction re-lists the service and emits only the difference.

Everything runs on the event loop; aetcd is reached only through :mod:`plugins.etcd.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

from agent.discovery.config_source import ConfigSource
from agent.discovery.logonce import LogOnce
from agent.discovery.records import format_record
from agent.discovery.registry import Registry, Subscription
from agent.discovery.types import Registration, RegistryStatus, ServiceKey, Update
from agent.errors import RegistryError
from plugins.etcd.client import (
    TRANSIENT,
    ConnectionLost,
    EtcdConnection,
    LeaseLost,
    WatchStream,
)
from plugins.etcd.config import EtcdConfig
from plugins.etcd.layout import KeyLayout
from plugins.etcd.state import ServiceState

log = logging.getLogger(__name__)

RegistrationKey = tuple[str, str]

# A registration write that fails with these is kept and redone by the next session.
_POSTPONED: tuple[type[BaseException], ...] = (*TRANSIENT, LeaseLost)


class _Feed:
    """One watched service and the subscriptions sharing it."""

    def __init__(self, service: str, state: ServiceState) -> None:
        self.service = service
        self.state = state
        self.subscriptions: list[Subscription] = []
        self.watch_id: int | None = None
        self.closed = False

    def push(self, updates: Iterable[Update]) -> None:
        for update in updates:
            for subscription in list(self.subscriptions):
                subscription.push(update)


class _Session:
    """One live connection: its watch stream and which watch answers for which service."""

    def __init__(self, conn: EtcdConnection, stream: WatchStream, tasks: asyncio.TaskGroup):
        self.conn = conn
        self.stream = stream
        self.tasks = tasks
        # etcd answers watch creates on a stream in the order they were sent.
        self.pending: deque[_Feed] = deque()
        self.by_watch: dict[int, _Feed] = {}
        self.write_lock = asyncio.Lock()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as part of the session: its transient failure ends the session."""
        try:
            self.tasks.create_task(coro)
        except RuntimeError:  # the session is already shutting down
            coro.close()


class EtcdRegistry(Registry):
    name = "etcd"

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.layout = KeyLayout(config.prefix)
        self._log_once = LogOnce(log, field="etcd_key")
        self._feeds: dict[str, _Feed] = {}
        self._registrations: dict[RegistrationKey, Registration] = {}
        self._dirty: set[RegistrationKey] = set()  # to (re)put under our lease
        self._withdrawn: set[RegistrationKey] = set()  # to delete, if still ours
        self._registrations_lock = asyncio.Lock()
        self._lease_id: int | None = None
        self._session: _Session | None = None
        self._sessions = 0  # how many sessions got connected, ever
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._status = RegistryStatus(False, time.time(), "not started")
        self._rng = random.Random()
        self._started = False
        self._closed = False
        self._config_source: ConfigSource | None = None

    @property
    def connection(self) -> EtcdConnection | None:
        """The current session's connection (None while disconnected)."""
        return self._session.conn if self._session is not None else None

    async def wait_connection(self) -> EtcdConnection:
        while True:
            await self._connected.wait()
            conn = self.connection
            if conn is not None:
                return conn
            await asyncio.sleep(0.05)  # between the session's end and its event being cleared

    def config_source(self) -> ConfigSource | None:
        if self._config_source is None:
            from plugins.etcd.config_source import EtcdConfigSource

            self._config_source = EtcdConfigSource(self)
        return self._config_source

    @property
    def lease_id(self) -> int | None:
        """The lease this agent's registrations are attached to (None until one is needed)."""
        return self._lease_id

    # lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        endpoints = ",".join(self.config.endpoints)
        self._status = RegistryStatus(False, time.time(), f"connecting to {endpoints}")
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        if self.config.connect_timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.connect_timeout_s):
                    await self._connected.wait()
        if self._connected.is_set():
            return
        if self.config.require_connection:
            await self.close()
            raise RegistryError(
                f"etcd {endpoints} not reachable within {self.config.connect_timeout_s}s"
            )
        log.warning("etcd %s not reachable yet; running disconnected, retrying", endpoints)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for feed in list(self._feeds.values()):
            for subscription in list(feed.subscriptions):
                subscription.close()
        async with self._registrations_lock:
            await self._revoke_lease()
            self._registrations.clear()
            self._dirty.clear()
            self._withdrawn.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._connected.clear()
        self._status = RegistryStatus(False, time.time(), "closed")

    async def _revoke_lease(self) -> None:
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is None:
            return
        session = self._session
        if session is not None:
            try:
                # Revoking deletes every key attached to the lease at once, on the server.
                async with asyncio.timeout(self.config.request_timeout_s):
                    await session.conn.revoke(lease_id)
                return
            except TRANSIENT as exc:
                reason = repr(exc)
        else:
            reason = "not connected"
        log.warning(
            "lease %x not revoked (%s); its keys expire within %ss",
            lease_id,
            reason,
            self.config.lease_ttl_s,
        )

    def status(self) -> RegistryStatus:
        return self._status

    # discovery

    def subscribe(self, key: ServiceKey) -> Subscription:
        if self._closed:
            raise RegistryError("registry is closed")
        subscription = Subscription(key, self._unsubscribe)
        feed = self._feeds.get(key.name)
        if feed is None:
            feed = _Feed(key.name, ServiceState(key.name, self.layout, self._log_once))
            self._feeds[key.name] = feed
            feed.subscriptions.append(subscription)
            session = self._session
            if session is not None:
                session.spawn(self._start_watch(session, feed))
            return subscription
        if feed.state.listed:
            subscription.push(feed.state.snapshot())
        feed.subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.get(subscription.key.name)
        if feed is None or subscription not in feed.subscriptions:
            return
        feed.subscriptions.remove(subscription)
        if feed.subscriptions:
            return
        feed.closed = True
        del self._feeds[feed.service]
        session, watch_id = self._session, feed.watch_id
        if session is not None and watch_id is not None and not self._closed:
            if session.by_watch.get(watch_id) is not feed:
                return  # not this stream's watch: the created response cancels it
            del session.by_watch[watch_id]
            session.spawn(self._cancel_watch(session, watch_id))

    async def _start_watch(self, session: _Session, feed: _Feed, *, relist: bool = False) -> None:
        """List the service if it never was (or was compacted past), then watch after that."""
        if relist or not feed.state.listed:
            prefix = self.layout.service_prefix(feed.service)
            async with asyncio.timeout(self.config.request_timeout_s):
                kvs, revision = await session.conn.range_prefix(prefix)
            if feed.closed:
                return
            feed.push(feed.state.listed_at(kvs, revision))
        async with session.write_lock:
            if feed.closed:
                return
            session.pending.append(feed)
            await session.stream.create(
                self.layout.service_prefix(feed.service), feed.state.next_revision
            )

    async def _cancel_watch(self, session: _Session, watch_id: int) -> None:
        async with session.write_lock:
            await session.stream.cancel(watch_id)

    async def _read_watch(self, session: _Session) -> None:
        while True:
            response = await session.stream.read()
            if response.created:
                if not session.pending:
                    raise ConnectionLost(f"watch {response.watch_id} created unasked")
                created = session.pending.popleft()
                if response.canceled and not response.compact_revision:
                    raise ConnectionLost(
                        f"watch on {created.service} refused: {response.cancel_reason}"
                    )
                created.watch_id = response.watch_id
                session.by_watch[response.watch_id] = created
                if created.closed:
                    del session.by_watch[response.watch_id]
                    session.spawn(self._cancel_watch(session, response.watch_id))
                    continue
            feed = session.by_watch.get(response.watch_id)
            if feed is None:
                continue  # the tail of a watch we canceled
            if response.compact_revision:
                del session.by_watch[response.watch_id]
                feed.watch_id = None
                log.warning(
                    "etcd compacted %s past revision %d (to %d); re-listing",
                    feed.service,
                    feed.state.next_revision,
                    response.compact_revision,
                )
                session.spawn(self._start_watch(session, feed, relist=True))
                continue
            if response.canceled:
                del session.by_watch[response.watch_id]
                feed.watch_id = None
                raise ConnectionLost(
                    f"watch on {feed.service} canceled by etcd: {response.cancel_reason}"
                )
            if response.events:
                for event in response.events:
                    if event.kind == "put":
                        feed.push(feed.state.put(event.kv))
                    else:
                        feed.push(
                            feed.state.delete(
                                event.kv.key, event.kv.mod_revision, event.prev_create_revision
                            )
                        )
            elif not response.created:
                feed.state.progress(response.revision)

    # registration

    async def register(self, registration: Registration) -> None:
        if self._closed:
            raise RegistryError("registry is closed")
        key = (registration.service, registration.instance_id)
        async with self._registrations_lock:
            self._registrations[key] = registration
            self._withdrawn.discard(key)
            self._dirty.add(key)
            try:
                await self._flush_now()
            except RegistryError:
                if key in self._dirty:  # refused (not merely postponed): forget it
                    self._dirty.discard(key)
                    del self._registrations[key]
                raise

    async def deregister(self, service: str, instance_id: str) -> None:
        key = (service, instance_id)
        async with self._registrations_lock:
            if self._registrations.pop(key, None) is None:
                return
            self._dirty.discard(key)
            self._withdrawn.add(key)
            await self._flush_now()

    async def _flush_now(self) -> None:
        """Apply pending registration changes if connected; otherwise the reconnect does."""
        session = self._session
        if session is None:
            log.info("etcd not connected; registrations applied once it is back")
            return
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await self._flush(session.conn)
        except _POSTPONED as exc:
            # The session notices the outage on its own and the next one flushes again.
            log.info("registrations postponed until etcd answers again: %r", exc)

    async def _flush(self, conn: EtcdConnection) -> None:
        """With the registrations lock held: withdraw, then (re)put, under our lease."""
        for _ in range(3):
            try:
                if self._dirty and self._lease_id is None:
                    await self._grant(conn)
                for key in sorted(self._withdrawn):
                    if self._lease_id is not None:
                        await conn.delete_owned(self.layout.key(*key), self._lease_id)
                    self._withdrawn.discard(key)
                for key in sorted(self._dirty):
                    registration = self._registrations.get(key)
                    if registration is not None:
                        assert self._lease_id is not None
                        value = format_record(registration)
                        await conn.put_owned(self.layout.key(*key), value, self._lease_id)
                    self._dirty.discard(key)
                return
            except LeaseLost:
                log.warning("lease %x is gone; granting a new one", self._lease_id or 0)
                await self._grant(conn)
        raise LeaseLost("the lease kept vanishing while re-putting registrations")

    async def _grant(self, conn: EtcdConnection) -> None:
        self._lease_id = await conn.grant(self.config.lease_ttl_s)
        # Whatever was attached to a previous lease went with it.
        self._dirty |= set(self._registrations)
        log.info("granted lease %x (ttl %ss)", self._lease_id, self.config.lease_ttl_s)

    async def _check_lease(self, conn: EtcdConnection) -> None:
        """Keep our lease alive; if it expired or was revoked, re-grant and re-put all."""
        if self._lease_id is None:
            await conn.range_prefix(b"\0", limit=1)  # still proves the server answers
            return
        if await conn.keepalive(self._lease_id) > 0:
            return
        log.warning(
            "lease %x lost (expired or revoked); re-putting %d registrations under a new one",
            self._lease_id,
            len(self._registrations),
        )
        self._lease_id = None
        if self._registrations:
            await self._grant(conn)

    async def _keep_lease(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_every_s)  # a timer, not synchronisation
            async with self._registrations_lock:
                if self._closed:
                    return
                async with asyncio.timeout(self.config.request_timeout_s):
                    await self._check_lease(session.conn)
                    await self._flush(session.conn)

    # connection

    async def _supervise(self) -> None:
        attempt = 0
        endpoints = self.config.endpoints
        index = 0
        while not self._closed:
            endpoint = endpoints[index % len(endpoints)]
            sessions = self._sessions
            try:
                await self._run_session(endpoint)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever ended the session: reconnect, never give up
                reason = _reason(exc)
                if not _is_transient(exc):
                    log.error("etcd session failed: %s", reason, exc_info=exc)
            else:
                reason = "session ended"
            if self._closed:
                return
            self._disconnected(f"{endpoint}: {reason}")
            if self._sessions != sessions:
                attempt = 0  # it was up: the outage starts now, retry soon
            index += 1
            delay = self.config.reconnect.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)  # reconnect pacing

    async def _run_session(self, endpoint: str) -> None:
        conn = EtcdConnection(endpoint, self.config)
        stream: WatchStream | None = None
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await conn.open()
            async with self._registrations_lock:
                if self._closed:
                    return
                async with asyncio.timeout(self.config.request_timeout_s):
                    await self._check_lease(conn)
                    await self._flush(conn)
            stream = conn.watch()
            async with asyncio.TaskGroup() as tasks:
                session = _Session(conn, stream, tasks)
                self._session = session
                self._sessions += 1
                self._connected_to(endpoint)
                tasks.create_task(self._read_watch(session))
                tasks.create_task(self._keep_lease(session))
                for feed in list(self._feeds.values()):
                    tasks.create_task(self._start_watch(session, feed))
        finally:
            self._session = None
            # Watch ids are per stream: the next stream hands out its own.
            for feed in self._feeds.values():
                feed.watch_id = None
            if stream is not None:
                stream.close()
            with contextlib.suppress(Exception):
                await conn.close()

    def _connected_to(self, endpoint: str) -> None:
        self._status = RegistryStatus(True, time.time(), f"connected to {endpoint}")
        self._connected.set()
        log.info("etcd connected to %s", endpoint)

    def _disconnected(self, reason: str) -> None:
        self._connected.clear()
        was = self._status
        since = time.time() if was.connected else was.since
        self._status = RegistryStatus(False, since, reason)
        if was.connected:
            log.warning("etcd connection lost (%s); keeping last known instances", reason)
        else:
            log.info("etcd still unreachable (%s)", reason)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _is_transient(exc: BaseException) -> bool:
    return all(isinstance(leaf, (*_POSTPONED, OSError)) for leaf in _leaves(exc))


def _reason(exc: BaseException) -> str:
    leaf = _leaves(exc)[0]
    details = getattr(leaf, "details", None)
    if callable(details):  # a gRPC error: its status detail says it best
        with contextlib.suppress(Exception):
            return f"{type(leaf).__name__}: {details()}"
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
