"""One kazoo client (one ZooKeeper session) bridged into asyncio.

kazoo has no asyncio handler, so it runs its threading handler and everything crosses into
the loop through ``call_soon_threadsafe``: the results of kazoo's ``*_async`` calls, watch
callbacks and session state changes. Nothing here blocks the loop; the only blocking kazoo
calls (stop/close) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.protocol.states import EventType, WatchedEvent, ZnodeStat
from kazoo.retry import KazooRetry

from plugins.zookeeper.config import ZooKeeperConfig

log = logging.getLogger(__name__)

# Errors that mean "not now": the session or connection went away; a reconnect re-does the work.
TRANSIENT = (ConnectionLoss, SessionExpiredError, ConnectionClosedError)

Watcher = Callable[[WatchedEvent], None]
StateListener = Callable[[str], None]


class ZkSession:
    def __init__(self, config: ZooKeeperConfig) -> None:
        backoff = config.reconnect
        retry = KazooRetry(
            max_tries=-1,
            delay=backoff.base_s,
            backoff=2,
            max_jitter=backoff.jitter,
            max_delay=backoff.max_s,
        )
        self.client = KazooClient(
            hosts=config.hosts,
            timeout=config.session_timeout_s,
            # Our own operations are not retried inside kazoo (the *_async calls never are):
            # a failed read or write is redone from scratch when the session is back.
            connection_retry=retry,
            logger=logging.getLogger("kazoo.client"),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[StateListener] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "session not started"
        return self._loop

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    @property
    def session_id(self) -> int | None:
        client_id = self.client.client_id
        return None if client_id is None else int(client_id[0])

    def add_state_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    async def start(self, wait_s: float) -> bool:
        """Start connecting (forever, with backoff); True if connected within ``wait_s``."""
        self._loop = asyncio.get_running_loop()
        self.client.add_listener(self._on_kazoo_state)
        event = self.client.start_async()
        if self.client.connected:
            return True
        if wait_s <= 0:
            return False
        waiter = self.loop.create_future()
        self._listeners.append(_resolve_on_connect(waiter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), wait_s)
        return bool(event.is_set())

    async def stop(self) -> None:
        # Closing the session deletes its ephemeral nodes at once, on the server.
        self._listeners.clear()
        await asyncio.to_thread(self._stop_blocking)

    def _stop_blocking(self) -> None:
        self.client.stop()
        self.client.close()

    def _on_kazoo_state(self, state: str) -> bool:
        # kazoo's connection thread: hand over and return at once (False: keep listening).
        self.threadsafe(self._dispatch_state, str(state))
        return False

    def _dispatch_state(self, state: str) -> None:
        for listener in list(self._listeners):
            listener(state)

    def threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from any thread; dropped once the loop is closed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed between the check and the call.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    def watcher(self, fn: Callable[[WatchedEvent], None]) -> Watcher:
        """A kazoo watch callback that delivers real events to ``fn`` on the loop.

        kazoo fires every watcher with a NONE event when the connection drops (and forgets
        them): those say nothing about the data, the reconnect handler re-reads instead.
        """

        def on_event(event: WatchedEvent) -> None:
            if event.type != EventType.NONE:
                self.threadsafe(fn, event)

        return on_event

    async def _bridge(self, async_result: Any) -> Any:
        if self._loop is None:  # a read before start(): kazoo fails it, we must hear of it
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = self._loop.create_future()

        def settle(result: Any) -> None:
            if future.done():
                return
            if result.successful():
                future.set_result(result.value)
            else:
                future.set_exception(result.exception)

        # rawlink callbacks run on kazoo's callback thread, or inline if already done.
        async_result.rawlink(lambda result: self.threadsafe(settle, result))
        return await future

    async def get_children(
        self, path: str, watch: Watcher | None = None
    ) -> tuple[list[str], ZnodeStat]:
        children, stat = await self._bridge(
            self.client.get_children_async(path, watch=watch, include_data=True)
        )
        return list(children), stat

    async def get(self, path: str, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]:
        data, stat = await self._bridge(self.client.get_async(path, watch=watch))
        return bytes(data or b""), stat

    async def exists(self, path: str, watch: Watcher | None = None) -> ZnodeStat | None:
        stat: ZnodeStat | None = await self._bridge(self.client.exists_async(path, watch=watch))
        return stat

    async def create_ephemeral(self, path: str, data: bytes) -> None:
        await self._bridge(self.client.create_async(path, data, ephemeral=True, makepath=True))

    async def create(self, path: str, data: bytes, *, makepath: bool = True) -> None:
        await self._bridge(self.client.create_async(path, data, makepath=makepath))

    async def set(self, path: str, data: bytes, version: int = -1) -> None:
        await self._bridge(self.client.set_async(path, data, version=version))

    async def delete(self, path: str, version: int = -1) -> bool:
        """Delete ``path``; False if it was already gone."""
        try:
            await self._bridge(self.client.delete_async(path, version=version))
        except NoNodeError:
            return False
        return True


def _resolve_on_connect(waiter: asyncio.Future[None]) -> StateListener:
    def listener(state: str) -> None:
        if state == KazooState.CONNECTED and not waiter.done():
            waiter.set_result(None)

    return listener
