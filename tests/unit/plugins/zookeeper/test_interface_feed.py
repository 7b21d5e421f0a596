"""The interface-level feed parses each provider node once (sans-IO: the watch is fed by hand)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.discovery.logonce import LogOnce
from agent.discovery.registry import Subscription
from agent.discovery.types import Add, Instance, Remove, Reset, ServiceKey
from plugins.zookeeper import feeds
from plugins.zookeeper.config import ZooKeeperConfig
from plugins.zookeeper.dubbo_url import DubboURL, parse
from plugins.zookeeper.feeds import FeedContext, InterfaceFeed
from plugins.zookeeper.layout import Layout
from plugins.zookeeper.watches import Node

IFACE = "org.example.Demo"


class NoSession:
    """Nothing is read here: the test sets the watch's children itself."""

    def watcher(self, fn: Any) -> Any:
        return fn


def node_name(port: int) -> str:
    params = {"interface": IFACE, "side": "provider", "application": "demo"}
    return DubboURL("dubbo", "10.0.0.1", port, IFACE, params).to_node_name()


def drain(subscription: Subscription) -> list[object]:
    updates = []
    while not subscription._queue.empty():
        updates.append(subscription._queue.get_nowait())
    return updates


@pytest.fixture
def feed() -> InterfaceFeed:
    import logging

    ctx = FeedContext(NoSession(), Layout(), ZooKeeperConfig(), LogOnce(logging.getLogger()))  # type: ignore[arg-type]
    return InterfaceFeed(ctx, Subscription(ServiceKey(IFACE), lambda _: None))


def set_children(feed: InterfaceFeed, *nodes: tuple[str, int]) -> None:
    feed.watch.children = {name: Node(name, b"", czxid, czxid, 1) for name, czxid in nodes}
    feed.watch.zxid = max([feed.watch.zxid, *(c for _, c in nodes)])


def test_unchanged_nodes_are_not_parsed_again(
    feed: InterfaceFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real = feeds.matching_instance

    def counting(key: ServiceKey, name: str, czxid: int) -> Instance | None:
        parsed.append(name)
        return real(key, name, czxid)

    monkeypatch.setattr(feeds, "matching_instance", counting)
    a, b = (node_name(1), 10), (node_name(2), 11)
    set_children(feed, a)
    feed._changed()
    set_children(feed, a, b)
    feed._changed()
    assert parsed == [a[0], b[0]]
    updates = drain(feed.subscription)
    assert [type(u) for u in updates] == [Reset, Add]
    reset = updates[0]
    assert isinstance(reset, Reset)
    # The view holds the very instance the consumer was handed, not a fresh copy of it.
    assert feed.view._shown is not None
    assert feed.view._shown["10.0.0.1:1"] is reset.instances[0]


def test_a_node_recreated_under_the_same_name_is_parsed_again(feed: InterfaceFeed) -> None:
    name = node_name(1)
    set_children(feed, (name, 10))
    feed._changed()
    set_children(feed)
    feed._changed()
    set_children(feed, (name, 20))
    feed._changed()
    updates = drain(feed.subscription)
    assert [type(u) for u in updates] == [Reset, Remove, Add]
    added = updates[-1]
    assert isinstance(added, Add) and added.instance.revision == 20


def test_url_parameters_are_shared_between_providers() -> None:
    one = parse("dubbo://10.0.0.1:1/x?application=demo&side=provider")
    two = parse("dubbo://10.0.0.2:1/x?application=demo&side=provider")
    for (k1, v1), (k2, v2) in zip(
        sorted(one.params.items()), sorted(two.params.items()), strict=True
    ):
        assert k1 is k2 and v1 is v2
