"""A real ZooKeeper 3.8 (the Debian package's jars) on a free 127.0.0.1 port, once per session.

The server may be stopped, restarted on the same port and data dir, and frozen (SIGSTOP)
by the tests; the ``zookeeper`` fixture hands the next test a running, thawed server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from tests.fixtures.zookeeper import ZooKeeperServer


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


@pytest.fixture
def zookeeper(zookeeper_server: ZooKeeperServer) -> ZooKeeperServer:
    """The shared server, started again if a previous test left it stopped or frozen."""
    server = zookeeper_server
    if server.process.running:
        server.thaw()
    else:
        server.start()
    return server


@pytest.fixture
def kz(zookeeper: ZooKeeperServer) -> Iterator[KazooClient]:
    """A kazoo client of the running server, for tests that look at its nodes."""
    client = KazooClient(hosts=zookeeper.hosts, timeout=4.0)
    client.start(timeout=15)
    yield client
    client.stop()
    client.close()
