"""The Nacos registry: one SDK client, feeds per subscription, the local app's registrations.

A supervisor task creates the client (retrying with backoff while Nacos refuses) and then
watches the connection. Every (re)connect re-sends what this agent holds (registrations,
withdrawals that failed, subscriptions) and re-reads every feed; the SDK's own redo does the
same, doing it here too makes it independent of the SDK version and lets status say when it
failed. After a *re*connect, instances missing from Nacos' answers are kept for
``restart_grace_s``: a restarted Nacos knows nothing until providers re-register, and a
consumer must never see that empty moment.

Everything runs on the event loop; the SDK is reached only through :mod:`plugins.nacos.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from agent.discovery.config_source import ConfigSource
from agent.discovery.logonce import LogOnce
from agent.discovery.registry import Registry, Subscription
from agent.discovery.types import Instance, Registration, RegistryStatus, ServiceKey
from agent.discovery.view import InstanceView
from agent.errors import RegistryError
from plugins.nacos.client import NacosCallError, NacosClient, namespace_exists
from plugins.nacos.config import Mode, NacosConfig
from plugins.nacos.naming import (
    MAPPING_GROUP,
    NacosInstance,
    NacosRegistration,
    app_instance,
    application_instance,
    interface_instance,
    key_service_name,
    parse_mapping,
    plain_instance,
    registration_of,
    routable,
    wanted_clusters,
)
from plugins.zookeeper.application_level import (
    AppInstance,
    MalformedInstance,
    MetadataInfo,
    MetadataResolver,
    parse_metadata_info,
)

log = logging.getLogger(__name__)

MODES: tuple[Mode, ...] = ("interface", "application", "plain")


class _Feed:
    """One subscription: the Nacos services it reads, and what it has told its consumer."""

    def __init__(self, registry: NacosRegistry, subscription: Subscription, mode: Mode) -> None:
        self.registry = registry
        self.subscription = subscription
        self.key = subscription.key
        self.mode = mode
        self.clusters = wanted_clusters(self.key, registry.config)
        self.group = self.key.attributes.get("nacos_group", registry.config.group)
        self.protocol = self.key.attributes.get("protocol", registry.config.dubbo_protocol)
        self.view = InstanceView()
        # Nacos service name -> its latest instance list (None until Nacos answered).
        self.lists: dict[str, list[NacosInstance] | None] = {}
        self.subscribed: set[str] = set()
        self.shown: dict[str, Instance] = {}
        self.first_seen: dict[str, int] = {}
        self.apps: tuple[str, ...] | None = None  # application mode: None until the mapping is read
        self.mapping_listened = False
        # One callable per service: the client unsubscribes by it.
        self._callbacks: dict[str, Callable[[list[NacosInstance]], Awaitable[None]]] = {}
        self.closed = False
        self._dirty = False
        self._running: asyncio.Task[None] | None = None
        if mode == "application":
            provided_by = self.key.attributes.get("provided_by")
            if provided_by is not None:
                self.apps = parse_mapping(provided_by)
                self._set_services(self.apps)
        else:
            self._set_services((key_service_name(self.key, mode),))

    def _set_services(self, names: tuple[str, ...]) -> None:
        for name in list(self.lists):
            if name not in names:
                del self.lists[name]
        for name in names:
            self.lists.setdefault(name, None)

    # (re)subscription, on the registry's current client

    async def sync(self, client: NacosClient) -> None:
        """Make sure every service is subscribed and its list read; then recompute."""
        if self.mode == "application" and self.key.attributes.get("provided_by") is None:
            if not self.mapping_listened:
                await client.listen_config(self.key.name, MAPPING_GROUP, self._mapping_changed)
                self.mapping_listened = True
            content = await client.get_config(self.key.name, MAPPING_GROUP)
            self._apply_mapping(content or "")
        for name in list(self.lists):
            await self._sync_service(client, name)
        self.poke()

    async def _sync_service(self, client: NacosClient, name: str) -> None:
        if self.closed:
            return
        if name not in self.subscribed:
            await client.subscribe(name, self.group, self._on_instances(name))
            self.subscribed.add(name)
        # A second subscriber of the same service gets no callback: read the list itself.
        if name in self.lists:
            self.lists[name] = await client.instances(name, self.group)

    def _on_instances(self, name: str) -> Callable[[list[NacosInstance]], Awaitable[None]]:
        cached = self._callbacks.get(name)
        if cached is not None:
            return cached

        async def changed(instances: list[NacosInstance]) -> None:
            if name in self.lists and not self.closed:
                self.lists[name] = instances
                self.poke()

        self._callbacks[name] = changed
        return changed

    async def _mapping_changed(self, content: str) -> None:
        self._apply_mapping(content)
        client = self.registry.client
        if client is not None and self.registry.connected:
            self.registry.spawn(self._sync_new_services(client))
        self.poke()

    def _apply_mapping(self, content: str) -> None:
        self.apps = parse_mapping(content)
        self._set_services(self.apps)

    async def _sync_new_services(self, client: NacosClient) -> None:
        try:
            for name in list(self.lists):
                if name not in self.subscribed:
                    await self._sync_service(client, name)
        except NacosCallError as exc:
            log.warning("%s: subscribing the mapped applications failed: %s", self.key.name, exc)
        self.poke()

    async def close(self, client: NacosClient | None) -> None:
        self.closed = True
        if self._running is not None:
            self._running.cancel()
        if client is None:
            return
        for name in list(self.subscribed):
            callback = self._callbacks.get(name)
            if callback is not None:
                with contextlib.suppress(NacosCallError):
                    await client.unsubscribe(name, self.group, callback)
        if self.mapping_listened:
            with contextlib.suppress(NacosCallError):
                await client.unlisten_config(self.key.name, MAPPING_GROUP, self._mapping_changed)

    # recomputation (coalesced: a burst of changes costs one run)

    def poke(self) -> None:
        self._dirty = True
        if self.closed or (self._running is not None and not self._running.done()):
            return
        self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._dirty and not self.closed:
            self._dirty = False
            try:
                await self._publish()
            except Exception:  # a bug must not stop later recomputations
                log.exception("%s: recomputing the subscription failed", self.key.name)

    def _ready(self) -> bool:
        if self.mode == "application" and self.apps is None:
            return False
        return all(found is not None for found in self.lists.values())

    async def _publish(self) -> None:
        if not self._ready():
            return
        revision = self.registry.next_revision()
        candidates: dict[str, Instance] = {}
        for name, found in list(self.lists.items()):
            for nacos_instance in found or ():
                if not routable(nacos_instance, self.clusters):
                    continue
                instance = await self._instance(name, nacos_instance, revision)
                if instance is not None:
                    candidates[instance.id] = instance
        if not self._ready() or self.closed:
            return  # the mapping changed while metadata was read: the next run publishes
        if self.registry.in_grace():
            # Just reconnected: what Nacos does not list yet may still re-register.
            for instance_id, instance in self.shown.items():
                candidates.setdefault(instance_id, instance)
        self.first_seen = {i: self.first_seen.get(i, revision) for i in candidates}
        stamped = {
            i: Instance(c.id, c.host, c.port, c.weight, c.metadata, self.first_seen[i])
            for i, c in candidates.items()
        }
        self.shown = stamped
        for update in self.view.update(stamped.values(), revision):
            self.subscription.push(update)

    async def _instance(self, name: str, found: NacosInstance, revision: int) -> Instance | None:
        if self.mode == "plain":
            return plain_instance(found, revision)
        if self.mode == "interface":
            return interface_instance(self.key, found, revision)
        app = app_instance(name, found)
        info = await self.registry.metadata_of(app)
        return application_instance(self.key, app, info, self.protocol, found.weight, revision)


class NacosRegistry(Registry):
    name = "nacos"

    def __init__(self, config: NacosConfig) -> None:
        self.config = config
        self.client: NacosClient | None = None
        self.connected = False
        self._log_once = LogOnce(log, field="nacos_service")
        self._feeds: dict[Subscription, _Feed] = {}
        self._held: dict[tuple[str, str], NacosRegistration] = {}
        self._withdrawn: dict[tuple[Any, ...], NacosRegistration] = {}  # persistent ones
        # (service, group) -> one instance of the ephemeral set last sent for it.
        self._published: dict[tuple[str, str], NacosRegistration] = {}
        self._registrations_lock = asyncio.Lock()
        self._metadata: dict[tuple[str, str], MetadataInfo] = {}
        self._local_metadata: MetadataResolver | None = None
        self._revision = 0
        self._grace_until = 0.0
        self._sessions = 0
        self._last_error = ""
        self._namespace_error = ""
        self._connected_event = asyncio.Event()  # connected once, ever (start() waits on it)
        self._up = asyncio.Event()  # connected now
        self._reconnect_hooks: set[Callable[[NacosClient], None]] = set()
        self._client_ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._status = RegistryStatus(False, time.time(), "not started")
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._config_source: ConfigSource | None = None
        self._rng = random.Random()
        self._started = False
        self._closed = False

    def set_local_metadata_resolver(self, resolver: MetadataResolver | None) -> None:
        """The Dubbo plugin's hook for metadata a provider keeps to itself (MetadataService)."""
        self._local_metadata = resolver

    # lifecycle

    @property
    def addresses(self) -> str:
        return ",".join(self.config.server_addresses)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        work_dir = self.config.work_dir
        if work_dir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="meshagent-nacos-")
            work_dir = self._workdir.name
        self._status = RegistryStatus(False, time.time(), f"connecting to {self.addresses}")
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(work_dir))
        if self.config.connect_timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.connect_timeout_s):
                    await self._connected_event.wait()
        if self._connected_event.is_set():
            return
        if self.config.require_connection:
            detail = self._status.detail
            await self.close()
            raise RegistryError(
                f"Nacos {self.addresses} not reachable within "
                f"{self.config.connect_timeout_s}s: {detail}"
            )
        log.warning("Nacos %s not reachable yet; running disconnected, retrying", self.addresses)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self.client
        for subscription in list(self._feeds):
            subscription.close()
        for task in list(self._tasks):
            task.cancel()
        async with self._registrations_lock:
            if client is not None and self.connected:
                # Ephemeral instances go with the connection; persistent ones must be removed.
                for reg in self._held.values():
                    if not reg.ephemeral:
                        try:
                            await client.deregister(reg)
                        except NacosCallError as exc:
                            log.warning("%s: persistent instance not removed: %s", reg.service, exc)
            self._held.clear()
            self._withdrawn.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if client is not None:
            await client.close()
        self.client = None
        self.connected = False
        if self._workdir is not None:
            self._workdir.cleanup()
        self._status = RegistryStatus(False, time.time(), "closed")

    def status(self) -> RegistryStatus:
        return self._status

    def config_source(self) -> ConfigSource | None:
        if self._config_source is None:
            from plugins.nacos.config_source import NacosConfigSource

            self._config_source = NacosConfigSource(self)
        return self._config_source

    async def wait_client(self) -> NacosClient:
        """The client once it exists (it may not be connected)."""
        await self._client_ready.wait()
        assert self.client is not None
        return self.client

    # connection supervision

    async def _supervise(self, work_dir: str) -> None:
        attempt = 0
        while self.client is None:
            try:
                self.client = await NacosClient.create(self.config, work_dir)
            except NacosCallError as exc:
                self._set_status(False, str(exc))
                delay = self.config.reconnect.delay(attempt, self._rng)
                attempt += 1
                log.warning("Nacos client not created (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)  # reconnect backoff, not synchronisation
        self._client_ready.set()
        while True:
            healthy = await self.client.healthy()
            if healthy and not self.connected:
                self.connected = True
                if self._sessions > 0:
                    self._grace_until = time.monotonic() + self.config.restart_grace_s
                    self.spawn(self._grace_ended(self.config.restart_grace_s))
                self._sessions += 1
                self._last_error = ""
                await self._check_namespace()
                self._set_status(True, f"connected to {self.addresses}")
                log.info("Nacos %s connected", self.addresses)
                self._up.set()
                await self._after_connect(self.client)
                self._connected_event.set()
            elif not healthy and self.connected:
                self.connected = False
                self._up.clear()
                self._set_status(False, f"connection to {self.addresses} lost")
                log.warning(
                    "Nacos %s connection lost; keeping last known instances", self.addresses
                )
            elif not healthy and self._status.detail.startswith("connecting"):
                self._set_status(False, f"connecting to {self.addresses}: no answer yet")
            await asyncio.sleep(self.config.health_interval_s)  # health poll interval

    async def _check_namespace(self) -> None:
        exists = await namespace_exists(self.config)
        if exists is False:
            self._namespace_error = (
                f"namespace {self.config.namespace!r} does not exist on Nacos {self.addresses}"
            )
            self._last_error = self._namespace_error
            log.error("%s: registrations refused until it is created", self._namespace_error)
        elif exists:
            self._namespace_error = ""

    def _set_status(self, connected: bool, detail: str) -> None:
        since = self._status.since if connected == self._status.connected else time.time()
        if self._last_error:
            detail = f"{detail}; last error: {self._last_error}"
        self._status = RegistryStatus(connected, since, detail)

    def _record_error(self, message: str) -> None:
        self._last_error = message
        self._set_status(self.connected, self._status.detail.split("; last error:")[0])

    async def _after_connect(self, client: NacosClient) -> None:
        async with self._registrations_lock:
            # Every group ever published, emptied ones too: the SDK's redo may bring back
            # what was deregistered while disconnected.
            groups = {(r.service, r.group) for r in self._held.values() if r.ephemeral}
            groups |= set(self._published)
            for service, group in sorted(groups):
                try:
                    await self._publish_group(client, service, group)
                except NacosCallError as exc:
                    self._record_error(str(exc))
                    log.warning("%s: re-register failed: %s", service, exc)
            for reg in [r for r in self._held.values() if not r.ephemeral]:
                try:
                    await client.register(reg)
                except NacosCallError as exc:
                    self._record_error(str(exc))
                    log.warning("%s: re-register failed: %s", reg.service, exc)
            try:
                await self._flush_withdrawn(client)
            except NacosCallError as exc:
                log.warning("withdrawing persistent instances failed: %s", exc)
        if self._feeds:
            try:
                await client.redo_now()
            except NacosCallError as exc:
                self._record_error(str(exc))
                log.warning("re-subscribing failed, the SDK retries within 30 s: %s", exc)
        for feed in list(self._feeds.values()):
            await self._sync_feed(client, feed)
        for hook in list(self._reconnect_hooks):
            hook(client)

    async def wait_connected(self) -> NacosClient:
        """The client, once it is connected."""
        while True:
            await self._up.wait()
            if self.client is not None and self.connected:
                return self.client

    def add_reconnect_hook(self, hook: Callable[[NacosClient], None]) -> None:
        """Call ``hook`` after every (re)connect, once registrations and feeds are re-sent."""
        self._reconnect_hooks.add(hook)

    def remove_reconnect_hook(self, hook: Callable[[NacosClient], None]) -> None:
        self._reconnect_hooks.discard(hook)

    async def _sync_feed(self, client: NacosClient, feed: _Feed) -> None:
        try:
            await feed.sync(client)
        except NacosCallError as exc:
            self._record_error(str(exc))
            log.warning("%s: subscribing failed: %s", feed.key.name, exc)

    async def _grace_ended(self, delay: float) -> None:
        await asyncio.sleep(delay)  # a timer: the grace period's end
        for feed in list(self._feeds.values()):
            feed.poke()

    def in_grace(self) -> bool:
        return time.monotonic() < self._grace_until

    def next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # discovery

    def mode_of(self, key: ServiceKey) -> Mode:
        mode = key.attributes.get("mode")
        for known in MODES:
            if mode == known:
                return known
        return self.config.mode_of(key.name)

    def subscribe(self, key: ServiceKey) -> Subscription:
        if self._closed:
            raise RegistryError("registry is closed")
        subscription = Subscription(key, self._unsubscribe)
        feed = _Feed(self, subscription, self.mode_of(key))
        self._feeds[subscription] = feed
        client = self.client
        if client is not None and self.connected:
            self.spawn(self._sync_feed(client, feed))
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.pop(subscription, None)
        if feed is not None:
            if self._closed:
                feed.closed = True
            else:
                self.spawn(feed.close(self.client if self.connected else None))

    async def metadata_of(self, app: AppInstance) -> MetadataInfo | None:
        """An app instance's MetadataInfo: remote (config dataId={app} group={revision}) or
        through the Dubbo plugin's hook; None when neither has it."""
        revision = app.revision
        if not revision:
            return None
        cache_key = (app.app, revision)
        cached = self._metadata.get(cache_key)
        if cached is not None:
            return cached
        info: MetadataInfo | None = None
        client = self.client
        if client is not None and app.metadata_is_remote:
            try:
                content = await client.get_config(app.app, revision)
            except NacosCallError:
                content = None
            if content:
                try:
                    info = parse_metadata_info(content.encode())
                except MalformedInstance as exc:
                    self._log_once.warn(f"{app.app}/{revision}", "metadata skipped: %s", exc)
        if info is None and self._local_metadata is not None:
            info = await self._local_metadata(app)
        if info is None:
            self._log_once.warn(
                f"{app.app}/{app.id}",
                "metadata revision %s not readable; kept unfiltered",
                revision,
            )
            return None
        # A revision names one immutable metadata content: caching it is safe.
        if len(self._metadata) > 10_000:
            self._metadata.clear()
        self._metadata[cache_key] = info
        return info

    # registration
    #
    # Ephemeral instances are published per (service, group): the whole set this agent holds
    # for it, in one call (see NacosClient.publish_ephemeral). Persistent ones one by one.

    async def register(self, registration: Registration) -> None:
        if self._closed:
            raise RegistryError("registry is closed")
        try:
            reg = registration_of(registration, self.config)
        except ValueError as exc:
            raise RegistryError(f"{registration.service}: {exc}") from exc
        if self._namespace_error and self.connected:
            await self._check_namespace()  # it may have been created since
            if self._namespace_error:
                raise RegistryError(self._namespace_error)
        key = (registration.service, registration.instance_id)
        async with self._registrations_lock:
            previous = self._held.get(key)
            self._held[key] = reg
            self._withdrawn.pop(reg.identity, None)
            replaced = previous is not None and previous.identity != reg.identity
            if previous is not None and not previous.ephemeral and (replaced or reg.ephemeral):
                self._withdrawn[previous.identity] = previous
            client = self.client
            if client is None or not self.connected:
                log.info("%s: not connected; registered once Nacos is back", reg.service)
                return
            try:
                await self._send(client, reg)
            except NacosCallError:
                if not await client.healthy():
                    log.info("%s: connection lost; registered once Nacos is back", reg.service)
                    return
                # Connected, and Nacos said no (unknown namespace, bad metadata): the caller
                # must hear it, and nothing is kept to re-send.
                if previous is not None:
                    self._held[key] = previous
                else:
                    del self._held[key]
                self._withdrawn.pop(previous.identity if previous else (), None)
                raise
            moved = previous is not None and (previous.service, previous.group) != (
                reg.service,
                reg.group,
            )
            if previous is not None and previous.ephemeral and moved:
                await self._publish_group(client, previous.service, previous.group)
            await self._flush_withdrawn(client)

    async def deregister(self, service: str, instance_id: str) -> None:
        async with self._registrations_lock:
            reg = self._held.pop((service, instance_id), None)
            if reg is None:
                return
            if not reg.ephemeral:
                self._withdrawn[reg.identity] = reg
            client = self.client
            if client is None or not self.connected:
                return
            try:
                if reg.ephemeral:
                    await self._publish_group(client, reg.service, reg.group)
                else:
                    await self._flush_withdrawn(client)
            except NacosCallError as exc:
                log.warning("%s: deregister failed, retried on reconnect: %s", reg.service, exc)

    async def _send(
        self, client: NacosClient, reg: NacosRegistration, removed: bool = False
    ) -> None:
        if reg.ephemeral:
            await self._publish_group(client, reg.service, reg.group)
        elif removed:
            await client.deregister(reg)
        else:
            await client.register(reg)

    async def _publish_group(self, client: NacosClient, service: str, group: str) -> None:
        """Send this agent's whole ephemeral set of (service, group); an empty one withdraws."""
        regs = [
            reg
            for reg in self._held.values()
            if reg.ephemeral and (reg.service, reg.group) == (service, group)
        ]
        # Nacos keys instances by ip:port:cluster: the newest registration of one wins.
        unique = list({reg.identity: reg for reg in regs}.values())
        if unique:
            await client.publish_ephemeral(unique)
            self._published[(service, group)] = unique[0]
            return
        sent = self._published.get((service, group))
        if sent is not None:
            await client.deregister(sent)
            del self._published[(service, group)]

    async def _flush_withdrawn(self, client: NacosClient) -> None:
        held = {reg.identity for reg in self._held.values() if not reg.ephemeral}
        for identity, reg in list(self._withdrawn.items()):
            if identity not in held:  # else another registration took this instance over
                await client.deregister(reg)
            del self._withdrawn[identity]
