"""One feed per subscription: watches for one layout, turned into the subscription's updates.

A feed stays silent until every watch it needs has been read once (then ``Reset``); after
that each change is a diff (``Add``/``Remove``) against what the subscription was told.
Losing the connection changes nothing here: watches keep their last state until the
registry's reconnect handler calls ``resync()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.discovery.logonce import LogOnce
from agent.discovery.records import MalformedRecord, parse_record
from agent.discovery.records import to_instance as plain_instance
from agent.discovery.registry import Subscription
from agent.discovery.types import Instance
from agent.discovery.view import InstanceView
from plugins.zookeeper.application_level import (
    AppInstance,
    MalformedInstance,
    MetadataInfo,
    MetadataResolver,
    matching_service,
    parse_instance,
    parse_mapping,
    parse_metadata_info,
    to_instance,
)
from plugins.zookeeper.config import ZooKeeperConfig
from plugins.zookeeper.dubbo_url import MalformedURL, decode_component
from plugins.zookeeper.interface_level import NotAProvider, matching_instance
from plugins.zookeeper.layout import Layout
from plugins.zookeeper.session import TRANSIENT, ZkSession
from plugins.zookeeper.watches import ChildrenWatch, DataWatch

log = logging.getLogger(__name__)


@dataclass
class FeedContext:
    session: ZkSession
    layout: Layout
    config: ZooKeeperConfig
    problems: LogOnce
    local_metadata: MetadataResolver | None = None


class Feed:
    def __init__(self, ctx: FeedContext, subscription: Subscription) -> None:
        self.ctx = ctx
        self.key = subscription.key
        self.subscription = subscription
        self.view = InstanceView()

    def start(self) -> None:
        self.resync()

    def resync(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def publish(self, candidates: list[Instance], revision: int) -> None:
        for update in self.view.update(candidates, revision):
            self.subscription.push(update)


class InterfaceFeed(Feed):
    """``/dubbo/{interface}/providers``, filtered by version/group as a Dubbo consumer would."""

    def __init__(self, ctx: FeedContext, subscription: Subscription) -> None:
        super().__init__(ctx, subscription)
        path = ctx.layout.providers(self.key.name)
        self.watch = ChildrenWatch(ctx.session, path, self._changed, ctx.problems, with_data=False)
        # Each provider node parsed once: a node's name is its whole content, so (name,
        # czxid) names one immutable answer. Re-parsing every child on every change cost
        # O(children) URL parses per event, and left the view holding fresh copies of
        # instances the cluster already held (twice the memory).
        self._parsed: dict[str, tuple[int, Instance | None]] = {}

    def resync(self) -> None:
        self.watch.resync()

    def close(self) -> None:
        self.watch.close()

    def _changed(self) -> None:
        candidates = []
        parsed: dict[str, tuple[int, Instance | None]] = {}
        for node in self.watch.children.values():
            known = self._parsed.get(node.name)
            if known is not None and known[0] == node.czxid:
                instance = known[1]
            else:
                try:
                    instance = matching_instance(self.key, node.name, node.czxid)
                except (MalformedURL, NotAProvider) as exc:
                    self.ctx.problems.warn(f"{self.watch.path}/{node.name}", "skipped: %s", exc)
                    continue
            parsed[node.name] = (node.czxid, instance)
            if instance is not None:
                candidates.append(instance)
        self._parsed = parsed
        self.publish(candidates, self.watch.zxid)


class PlainFeed(Feed):
    """``/meshagent/services/{service}/{instance_id}`` JSON records."""

    def __init__(self, ctx: FeedContext, subscription: Subscription) -> None:
        super().__init__(ctx, subscription)
        path = ctx.layout.plain_service(self.key.name)
        self.watch = ChildrenWatch(ctx.session, path, self._changed, ctx.problems, with_data=True)

    def resync(self) -> None:
        self.watch.resync()

    def close(self) -> None:
        self.watch.close()

    def _changed(self) -> None:
        candidates = []
        for node in self.watch.children.values():
            path = f"{self.watch.path}/{node.name}"
            try:
                instance_id = decode_component(node.name)
                record = parse_record(node.data)
            except (MalformedURL, MalformedRecord) as exc:
                self.ctx.problems.warn(path, "skipped: %s", exc)
                continue
            candidates.append(plain_instance(instance_id, record, node.czxid))
        self.publish(candidates, self.watch.zxid)


class ApplicationFeed(Feed):
    """Dubbo 3: interface → applications (mapping or ``provided_by``) → their instances."""

    def __init__(self, ctx: FeedContext, subscription: Subscription) -> None:
        super().__init__(ctx, subscription)
        self.protocol = self.key.attributes.get("protocol", ctx.config.dubbo_protocol)
        self._provided_by = self.key.attributes.get("provided_by")
        self.mapping: DataWatch | None = None
        self.apps: dict[str, ChildrenWatch] = {}
        self._metadata: dict[tuple[str, str], MetadataInfo] = {}
        self._recompute = Coalescer(self._compute)
        if self._provided_by is None:
            path = ctx.layout.mapping(self.key.name)
            self.mapping = DataWatch(ctx.session, path, self._mapping_changed, ctx.problems)

    def start(self) -> None:
        if self._provided_by is not None:
            # An explicit list of applications overrides the registry's mapping.
            self._set_apps(parse_mapping(self._provided_by.encode()))
        self.resync()
        self._recompute.poke()  # with no application to wait for, the Reset is due now

    def resync(self) -> None:
        if self.mapping is not None:
            self.mapping.resync()
        for watch in self.apps.values():
            watch.resync()

    def close(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
        for watch in self.apps.values():
            watch.close()
        self._recompute.close()

    def _mapping_changed(self) -> None:
        assert self.mapping is not None
        node = self.mapping.node
        self._set_apps(parse_mapping(node.data) if node is not None else ())
        self._recompute.poke()

    def _set_apps(self, apps: tuple[str, ...]) -> None:
        for app in self.apps.keys() - set(apps):
            self.apps.pop(app).close()
        for app in apps:
            if app not in self.apps:
                path = self.ctx.layout.app_instances(app)
                watch = ChildrenWatch(
                    self.ctx.session, path, self._recompute_soon, self.ctx.problems, with_data=True
                )
                self.apps[app] = watch
                watch.resync()

    def _recompute_soon(self) -> None:
        self._recompute.poke()

    def _ready(self) -> bool:
        if self.mapping is not None and not self.mapping.loaded:
            return False
        return all(watch.loaded for watch in self.apps.values())

    async def _compute(self) -> None:
        if not self._ready():
            return
        candidates: list[Instance] = []
        live: set[tuple[str, str]] = set()
        revision = self.mapping.zxid if self.mapping is not None else 0
        for watch in list(self.apps.values()):
            revision = max(revision, watch.zxid)
            for node in list(watch.children.values()):
                path = f"{watch.path}/{node.name}"
                try:
                    app_instance = parse_instance(node.data)
                except MalformedInstance as exc:
                    self.ctx.problems.warn(path, "skipped: %s", exc)
                    continue
                live.add((app_instance.app, app_instance.revision))
                instance = await self._instance(app_instance, node.czxid, path)
                if instance is not None:
                    candidates.append(instance)
        if self._ready():  # the mapping may have changed while metadata was read
            self.publish(candidates, revision)
            # Forget metadata of revisions no instance carries any more.
            self._metadata = {k: v for k, v in self._metadata.items() if k in live}

    async def _instance(self, app_instance: AppInstance, czxid: int, path: str) -> Instance | None:
        info = await self._metadata_of(app_instance, path)
        if info is None:
            # Nothing says which services this instance has: keep it, as the mapping does.
            return to_instance(app_instance, czxid, self.protocol)
        service = matching_service(self.key, info, self.protocol)
        if service is None:
            return None
        return to_instance(app_instance, czxid, self.protocol, service)

    async def _metadata_of(self, app_instance: AppInstance, path: str) -> MetadataInfo | None:
        revision = app_instance.revision
        if not revision:
            return None
        cache_key = (app_instance.app, revision)
        cached = self._metadata.get(cache_key)
        if cached is not None:
            return cached
        info = await self._remote_metadata(app_instance)
        if info is None and self.ctx.local_metadata is not None:
            info = await self.ctx.local_metadata(app_instance)
        if info is None:
            self.ctx.problems.warn(
                path, "metadata revision %s not readable; instance kept unfiltered", revision
            )
            return None
        # A revision names one immutable metadata content: caching it is safe.
        self._metadata[cache_key] = info
        return info

    async def _remote_metadata(self, app_instance: AppInstance) -> MetadataInfo | None:
        path = self.ctx.layout.metadata(app_instance.app, app_instance.revision)
        try:
            stat = await self.ctx.session.exists(path)
            if stat is None:
                return None
            data, _ = await self.ctx.session.get(path)
        except TRANSIENT:
            return None
        except Exception as exc:  # NoNode in between, NoAuth: treat as not stored remotely
            log.debug("%s: metadata read failed: %r", path, exc)
            return None
        try:
            return parse_metadata_info(data)
        except MalformedInstance as exc:
            self.ctx.problems.warn(path, "metadata skipped: %s", exc)
            return None


class Coalescer:
    """Runs ``fn`` after ``poke()``; pokes during a run cause exactly one more run."""

    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._fn = fn
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def poke(self) -> None:
        self._dirty = True
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._dirty and not self._closed:
            self._dirty = False
            try:
                await self._fn()
            except Exception:  # a bug must not stop later recomputations
                log.exception("recomputing a subscription failed")

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()


FEEDS: dict[str, Callable[[FeedContext, Subscription], Feed]] = {
    "interface": InterfaceFeed,
    "application": ApplicationFeed,
    "plain": PlainFeed,
}
