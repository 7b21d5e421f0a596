"""Watched znodes, kept as in-loop state: a directory's children, or one node's data.

ZooKeeper watches fire once and say only "something changed". Each watch here re-reads,
re-arming the watch with the read, and coalesces: events arriving while a read runs mark it
dirty and one more read follows. A read that fails because the connection went away stops
quietly; the registry calls ``resync()`` on every reconnect, which re-reads everything
(kazoo forgets all watches when the connection drops).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import WatchedEvent, ZnodeStat

from agent.discovery.logonce import LogOnce
from plugins.zookeeper.layout import child_name
from plugins.zookeeper.session import TRANSIENT, ZkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    name: str
    data: bytes
    czxid: int
    mzxid: int
    ephemeral_owner: int


def _node(name: str, data: bytes, stat: ZnodeStat) -> Node:
    return Node(name, data, stat.czxid, stat.mzxid, stat.ephemeralOwner)


class _Watch:
    def __init__(
        self, session: ZkSession, path: str, on_change: Callable[[], None], problems: LogOnce
    ) -> None:
        self.session = session
        self.path = path
        self.loaded = False
        """True once one read succeeded: the state below is the registry's answer."""
        self.zxid = 0
        self._on_change = on_change
        self._problems = problems
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._watcher = session.watcher(self._on_event)

    def _on_event(self, event: WatchedEvent) -> None:
        raise NotImplementedError

    def resync(self) -> None:
        raise NotImplementedError

    async def _read(self) -> bool:
        """One read; True if the state changed."""
        raise NotImplementedError

    def _dirty(self) -> bool:
        raise NotImplementedError

    def _schedule(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"zk:{self.path}")

    async def _run(self) -> None:
        while self._dirty() and not self._closed:
            try:
                changed = await self._read()
            except TRANSIENT:
                return  # resync() on reconnect
            except KazooException as exc:
                # e.g. NoAuth: nothing a retry now would fix; the next reconnect tries again.
                self._problems.warn(self.path, "read failed: %r", exc)
                return
            if changed and not self._closed:
                try:
                    self._on_change()
                except Exception:  # a bug turning data into updates must not stop the watch
                    log.exception("%s: handling a change failed", self.path)

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()


class ChildrenWatch(_Watch):
    """The children of ``path`` with their stats (and data when ``with_data``).

    With data, each child's data is watched too: Dubbo 3 rewrites an application instance's
    JSON in place when its metadata revision changes. A missing directory is an empty one,
    with a watch for its creation.
    """

    def __init__(
        self,
        session: ZkSession,
        path: str,
        on_change: Callable[[], None],
        problems: LogOnce,
        *,
        with_data: bool,
    ) -> None:
        super().__init__(session, path, on_change, problems)
        self.with_data = with_data
        self.children: dict[str, Node] = {}
        self._children_dirty = True
        self._stale: set[str] = set()

    def _on_event(self, event: WatchedEvent) -> None:
        if event.path == self.path:
            self._children_dirty = True
        elif event.path.startswith(self.path + "/"):
            self._stale.add(child_name(event.path))
        self._schedule()

    def resync(self) -> None:
        self._children_dirty = True
        self._stale.update(self.children)
        self._schedule()

    def _dirty(self) -> bool:
        return self._children_dirty or bool(self._stale)

    async def _read(self) -> bool:
        changed = False
        if self._children_dirty:
            self._children_dirty = False
            names = await self._list()
            if names is None:
                return False  # appeared in between; the watch already asked for a re-read
            gone = self.children.keys() - names
            for name in gone:
                del self.children[name]
            self._stale = (self._stale & names) | (names - self.children.keys())
            changed = bool(gone) or not self.loaded
        stale, self._stale = self._stale, set()
        reads = await asyncio.gather(*(self._read_child(name) for name in stale))
        for name, node in zip(stale, reads, strict=True):
            if node is None:
                changed |= self.children.pop(name, None) is not None
            elif self.children.get(name) != node:
                self.children[name] = node
                changed = True
        self.loaded = True
        return changed

    async def _list(self) -> set[str] | None:
        try:
            names, stat = await self.session.get_children(self.path, self._watcher)
        except NoNodeError:
            if await self.session.exists(self.path, self._watcher) is not None:
                self._children_dirty = True
                return None
            return set()
        self.zxid = max(self.zxid, stat.pzxid, stat.mzxid)
        return set(names)

    async def _read_child(self, name: str) -> Node | None:
        path = f"{self.path}/{name}"
        try:
            if self.with_data:
                data, stat = await self.session.get(path, self._watcher)
            else:
                found = await self.session.exists(path)
                if found is None:
                    return None
                data, stat = b"", found
        except NoNodeError:
            return None
        self.zxid = max(self.zxid, stat.mzxid)
        return _node(name, data, stat)


class DataWatch(_Watch):
    """One node's data, or None while it does not exist (watched for creation)."""

    def __init__(
        self, session: ZkSession, path: str, on_change: Callable[[], None], problems: LogOnce
    ) -> None:
        super().__init__(session, path, on_change, problems)
        self.node: Node | None = None
        self._is_dirty = True

    def _on_event(self, event: WatchedEvent) -> None:
        self._is_dirty = True
        self._schedule()

    def resync(self) -> None:
        self._is_dirty = True
        self._schedule()

    def _dirty(self) -> bool:
        return self._is_dirty

    async def _read(self) -> bool:
        self._is_dirty = False
        try:
            data, stat = await self.session.get(self.path, self._watcher)
            node: Node | None = _node(child_name(self.path), data, stat)
            self.zxid = max(self.zxid, stat.mzxid)
        except NoNodeError:
            if await self.session.exists(self.path, self._watcher) is not None:
                self._is_dirty = True
                return False
            node = None
        changed = node != self.node or not self.loaded
        self.node = node
        self.loaded = True
        return changed
