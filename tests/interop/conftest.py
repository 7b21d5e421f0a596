"""Session fixtures for interop tests: a real ZooKeeper and a real Java Dubbo provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.java_dubbo import DubboProvider, build_peer, start_provider
from tests.fixtures.programs import find
from tests.fixtures.zookeeper import ZooKeeperServer, java_binary, zookeeper_classpath


@pytest.fixture(scope="session")
def interop_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs and data of every process the interop tests start (kept by pytest for a look after)."""
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="session")
def dubbo_peer_jar() -> Path:
    if java_binary() is None or find("mvn") is None:
        # No skips: `make test` installs them; a missing one is a broken setup.
        pytest.fail("JDK 17 and Maven are needed to build the Java Dubbo peer (make test)")
    return build_peer()


def _require_zookeeper() -> None:
    if java_binary() is None or zookeeper_classpath() is None:
        pytest.fail("ZooKeeper 3.8 (Debian package zookeeper) is not installed (make test)")


@pytest.fixture(scope="session")
def zookeeper(interop_workdir: Path) -> Iterator[ZooKeeperServer]:
    """One ZooKeeper for the session; to stop, freeze or restart one, use zookeeper_factory."""
    _require_zookeeper()
    with ZooKeeperServer(interop_workdir / "zookeeper") as zk:
        yield zk


@pytest.fixture
def zookeeper_factory(tmp_path: Path) -> Iterator[Callable[..., ZooKeeperServer]]:
    """Start private ZooKeepers (safe to stop, freeze, restart); all are stopped at teardown."""
    _require_zookeeper()
    servers: list[ZooKeeperServer] = []

    def make(**kwargs: Any) -> ZooKeeperServer:
        zk = ZooKeeperServer(tmp_path / f"zookeeper-{len(servers)}", **kwargs)
        servers.append(zk)
        return zk.start()

    yield make
    for zk in servers:
        zk.stop()


@pytest.fixture(scope="session")
def dubbo_provider(
    zookeeper: ZooKeeperServer, dubbo_peer_jar: Path, interop_workdir: Path
) -> Iterator[DubboProvider]:
    """The Java provider, registered in ``zookeeper`` with register-mode all, id "provider-1"."""
    provider = start_provider(
        interop_workdir,
        registry=zookeeper.url,
        register_mode="all",
        provider_id="provider-1",
        jar=dubbo_peer_jar,
    )
    yield provider
    provider.stop()


@pytest.fixture
def dubbo_provider_factory(
    dubbo_peer_jar: Path, tmp_path: Path
) -> Iterator[Callable[..., DubboProvider]]:
    """Start more providers (keyword arguments of start_provider); all stopped at teardown."""
    providers: list[DubboProvider] = []

    def make(**kwargs: Any) -> DubboProvider:
        provider = start_provider(tmp_path, jar=dubbo_peer_jar, **kwargs)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.stop()
