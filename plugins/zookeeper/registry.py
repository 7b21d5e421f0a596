"""The ZooKeeper registry: one kazoo session, many subscriptions, the local app's registrations.

Everything below runs on the event loop; kazoo's threads only ever reach it through
``ZkSession.threadsafe``. Reconnects drive two things: every feed re-reads (kazoo dropped
the watches), and every registration is made sure of (re-created when the session was lost,
or when the node belongs to a previous incarnation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooState
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

from agent.discovery.config_source import ConfigSource
from agent.discovery.logonce import LogOnce
from agent.discovery.records import format_record
from agent.discovery.registry import Registry, Subscription
from agent.discovery.types import Registration, RegistryStatus, ServiceKey
from agent.errors import RegistryError
from plugins.zookeeper.application_level import MetadataResolver
from plugins.zookeeper.config import Mode, ZooKeeperConfig
from plugins.zookeeper.feeds import FEEDS, Feed, FeedContext
from plugins.zookeeper.interface_level import consumer_url, provider_url
from plugins.zookeeper.layout import Layout
from plugins.zookeeper.session import TRANSIENT, ZkSession
from plugins.zookeeper.watches import DataWatch

log = logging.getLogger(__name__)

_PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Publication:
    """A registration as it is written: the znode path and its data."""

    path: str
    data: bytes


class ZooKeeperRegistry(Registry):
    name = "zookeeper"

    def __init__(
        self, config: ZooKeeperConfig, *, local_metadata: MetadataResolver | None = None
    ) -> None:
        self.config = config
        self.layout = Layout(config.root, config.services_root, config.plain_root)
        self.session = ZkSession(config)
        self._ctx = FeedContext(
            self.session, self.layout, config, LogOnce(log), local_metadata=local_metadata
        )
        self._feeds: dict[Subscription, Feed] = {}
        self._published: dict[tuple[str, str], Publication] = {}
        # Deregistered while disconnected: the session may come back with the node still there.
        self._withdrawn: set[str] = set()
        self._registrations_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._status = RegistryStatus(False, time.time(), "not started")
        # A write outlasting a session timeout is as good as lost; the reconnect redoes it.
        self._op_timeout_s = max(config.session_timeout_s, 1.0)
        self._started = False
        self._closed = False
        # The config source's watches: re-read on every reconnect, like the feeds.
        self.config_watches: set[DataWatch] = set()
        self._config_source: ConfigSource | None = None

    def config_source(self) -> ConfigSource | None:
        if self._config_source is None:
            from plugins.zookeeper.config_source import ZooKeeperConfigSource

            self._config_source = ZooKeeperConfigSource(self)
        return self._config_source

    def set_local_metadata_resolver(self, resolver: MetadataResolver | None) -> None:
        """The Dubbo plugin's hook for metadata a provider keeps to itself (MetadataService)."""
        self._ctx.local_metadata = resolver

    # lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.session.add_state_listener(self._on_state)
        self._status = RegistryStatus(False, time.time(), f"connecting to {self.config.hosts}")
        connected = await self.session.start(self.config.connect_timeout_s)
        if not connected:
            if self.config.require_connection:
                await self.session.stop()
                raise RegistryError(
                    f"ZooKeeper {self.config.hosts} not reachable within "
                    f"{self.config.connect_timeout_s}s"
                )
            log.warning(
                "ZooKeeper %s not reachable yet; running disconnected, retrying",
                self.config.hosts,
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._feeds):
            subscription.close()
        for task in list(self._tasks):
            task.cancel()
        self._published.clear()
        if self._started:
            # Closing the session removes every ephemeral node it owns, atomically.
            await self.session.stop()
        self._status = RegistryStatus(False, time.time(), "closed")

    def status(self) -> RegistryStatus:
        return self._status

    # discovery

    def mode_of(self, key: ServiceKey) -> Mode:
        mode = key.attributes.get("mode")
        if mode in FEEDS:
            return mode  # type: ignore[return-value]
        return self.config.mode_of(key.name)

    def subscribe(self, key: ServiceKey) -> Subscription:
        if self._closed:
            raise RegistryError("registry is closed")
        subscription = Subscription(key, self._unsubscribe)
        mode = self.mode_of(key)
        feed = FEEDS[mode](self._ctx, subscription)
        self._feeds[subscription] = feed
        feed.start()
        if mode == "interface" and self.config.consumer_host:
            self._spawn(self._publish_consumer(subscription))
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.pop(subscription, None)
        if feed is not None:
            feed.close()
        consumer = self._consumer_key(subscription)
        if consumer in self._published and not self._closed:
            self._spawn(self._withdraw_consumer(consumer))

    @staticmethod
    def _consumer_key(subscription: Subscription) -> tuple[str, str]:
        return ("consumer:" + subscription.key.name, f"subscription-{id(subscription):x}")

    async def _publish_consumer(self, subscription: Subscription) -> None:
        assert self.config.consumer_host is not None
        url = consumer_url(subscription.key, self.config.consumer_host, self.config.application)
        path = f"{self.layout.consumers(subscription.key.name)}/{url.to_node_name()}"
        publication = Publication(path, self.config.consumer_host.encode())
        try:
            await self._hold(self._consumer_key(subscription), publication)
        except RegistryError as exc:
            log.warning("%s: consumer not published: %s", path, exc)

    async def _withdraw_consumer(self, consumer: tuple[str, str]) -> None:
        try:
            await self.deregister(*consumer)
        except RegistryError as exc:
            log.warning("consumer %s not withdrawn: %s", consumer[0], exc)

    # registration

    def publication(self, registration: Registration) -> Publication:
        if registration.protocol == "dubbo":
            url = provider_url(registration, application=self.config.application)
            path = f"{self.layout.providers(registration.service)}/{url.to_node_name()}"
            # Curator writes the writer's address as data by default; Dubbo never reads it.
            return Publication(path, registration.host.encode())
        path = self.layout.plain_instance(registration.service, registration.instance_id)
        return Publication(path, format_record(registration))

    async def register(self, registration: Registration) -> None:
        if self._closed:
            raise RegistryError("registry is closed")
        await self._hold(
            (registration.service, registration.instance_id), self.publication(registration)
        )

    async def _hold(self, key: tuple[str, str], publication: Publication) -> None:
        """Publish ``publication`` now if connected, and again after every reconnect."""
        async with self._registrations_lock:
            previous = self._published.get(key)
            if previous is not None and previous.path == publication.path:
                publication = Publication(previous.path, publication.data)
            self._published[key] = publication
            self._withdrawn.discard(publication.path)
            if not self.session.connected:
                # kazoo would queue the writes until the connection is back: the caller must
                # not wait that long; the reconnect handler publishes everything we hold.
                if previous is not None and previous.path != publication.path:
                    self._withdrawn.add(previous.path)
                log.info("%s: not connected; published once the session is back", publication.path)
                return
            replaced = previous.path if previous is not None else publication.path
            try:
                # The new node first, then the old one away (a changed Dubbo URL is a new node
                # name): consumers show the newest node of an id, so they never see it gone.
                async with asyncio.timeout(self._op_timeout_s):
                    await self._publish(publication)
            except (*TRANSIENT, TimeoutError):
                if replaced != publication.path:
                    self._withdrawn.add(replaced)
                log.info("%s: not connected; published once the session is back", publication.path)
                return
            except KazooException as exc:
                if previous is not None:
                    self._published[key] = previous  # still there: the old node was kept
                else:
                    del self._published[key]
                raise RegistryError(f"{publication.path}: {exc!r}") from exc
            if replaced != publication.path:
                try:
                    async with asyncio.timeout(self._op_timeout_s):
                        await self._withdraw(replaced)
                except (*TRANSIENT, TimeoutError):
                    self._withdrawn.add(replaced)
                except KazooException as exc:
                    log.warning("%s: withdraw failed: %r", replaced, exc)

    async def deregister(self, service: str, instance_id: str) -> None:
        async with self._registrations_lock:
            publication = self._published.pop((service, instance_id), None)
            if publication is None:
                return
            if not self.session.connected:
                self._withdrawn.add(publication.path)
                return
            try:
                async with asyncio.timeout(self._op_timeout_s):
                    await self._withdraw(publication.path)
            except (*TRANSIENT, TimeoutError):
                self._withdrawn.add(publication.path)
            except KazooException as exc:
                raise RegistryError(f"{publication.path}: {exc!r}") from exc

    async def _publish(self, publication: Publication) -> None:
        """Make sure the ephemeral node exists, owned by this session, with our data."""
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                await self.session.create_ephemeral(publication.path, publication.data)
                return
            except NodeExistsError:
                pass
            stat = await self.session.exists(publication.path)
            if stat is None:
                continue
            if stat.ephemeralOwner == self.session.session_id:
                data, stat = await self.session.get(publication.path)
                if data != publication.data:
                    await self.session.set(publication.path, publication.data, stat.version)
                return
            # Left by an earlier session of ours (agent restarted, session not yet expired)
            # or someone else's: this ip:port is ours now, as Dubbo does on re-register.
            try:
                await self.session.delete(publication.path, version=stat.version)
            except BadVersionError:
                continue
        raise RegistryError(f"{publication.path}: could not create after {_PUBLISH_ATTEMPTS} tries")

    async def _withdraw(self, path: str) -> None:
        stat = await self.session.exists(path)
        if stat is None or stat.ephemeralOwner != self.session.session_id:
            return  # gone already, or another session's (a successor took the name)
        with contextlib.suppress(NoNodeError, BadVersionError):
            await self.session.delete(path, version=stat.version)

    # session state

    def _on_state(self, state: str) -> None:
        if self._closed:
            return
        now = time.time()
        if state == KazooState.CONNECTED:
            session_id = self.session.session_id or 0
            self._status = RegistryStatus(True, now, f"session 0x{session_id:x}")
            log.info("ZooKeeper connected, session 0x%x", session_id)
            self._spawn(self._after_connect())
            return
        detail = "session lost" if state == KazooState.LOST else "connection suspended"
        since = now if self._status.connected else self._status.since
        self._status = RegistryStatus(False, since, detail)
        log.warning("ZooKeeper %s; keeping last known instances", detail)

    async def _after_connect(self) -> None:
        for feed in list(self._feeds.values()):
            feed.resync()
        for watch in list(self.config_watches):
            watch.resync()
        async with self._registrations_lock:
            # Publications before withdrawals: a registration changed during the outage gets
            # its new node before the old one goes (the two paths never coincide).
            for publication in list(self._published.values()):
                try:
                    async with asyncio.timeout(self._op_timeout_s):
                        await self._publish(publication)
                except (*TRANSIENT, TimeoutError):
                    return  # the next reconnect tries again
                except (KazooException, RegistryError) as exc:
                    log.warning("%s: re-publish failed: %r", publication.path, exc)
            for path in list(self._withdrawn):
                try:
                    async with asyncio.timeout(self._op_timeout_s):
                        await self._withdraw(path)
                except (*TRANSIENT, TimeoutError):
                    return
                except KazooException as exc:
                    log.warning("%s: withdraw failed: %r", path, exc)
                self._withdrawn.discard(path)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
