"""The ZooKeeper fixture: starts, answers, freezes, thaws, restarts with its data."""

from __future__ import annotations

from collections.abc import Callable

import kazoo.client as kazoo_client
import pytest

from tests.fixtures.zookeeper import ZooKeeperServer, four_letter_word

pytestmark = pytest.mark.integration


def test_freeze_thaw_restart(zookeeper_factory: Callable[..., ZooKeeperServer]) -> None:
    zk = zookeeper_factory()
    assert zk.ruok()
    assert "standalone" in (four_letter_word(zk.host, zk.port, "srvr") or "")

    client = kazoo_client.KazooClient(hosts=zk.hosts, timeout=10)
    client.start(timeout=15)
    try:
        client.create("/kept", b"v1")
    finally:
        client.stop()
        client.close()

    zk.freeze()
    assert not zk.ruok(timeout=0.5)
    zk.thaw()
    zk.wait_serving(10)

    pid = zk.process.pid
    zk.restart()
    assert zk.process.pid != pid
    client = kazoo_client.KazooClient(hosts=zk.hosts, timeout=10)
    client.start(timeout=15)
    try:
        assert client.get("/kept")[0] == b"v1"
    finally:
        client.stop()
        client.close()

    zk.stop()
    assert not zk.process.running
    assert not zk.ruok(timeout=0.2)
