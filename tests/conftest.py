"""Fixtures shared by every test directory.

Nacos takes half a minute and half a GiB to start, so one server serves the whole session
(contract, integration and interop alike); tests keep apart by namespace, group or service name.
Tests that restart a server take ``nacos_factory`` and get their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.nacos import NacosServer
from tests.fixtures.programs import find
from tests.fixtures.zookeeper import java_binary


def _require_java_and_maven() -> None:
    if java_binary() is None or find("mvn") is None:
        # No skips: `make test` installs them; a missing one is a broken setup.
        pytest.fail("JDK 17 and Maven are needed to build and run the Nacos server (make test)")


@pytest.fixture(scope="session")
def nacos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosServer]:
    """One Nacos for the session. Tests must not stop or restart it (use nacos_factory)."""
    _require_java_and_maven()
    with NacosServer(tmp_path_factory.mktemp("nacos")) as server:
        yield server


@pytest.fixture
def nacos_factory(tmp_path: Path) -> Iterator[Callable[..., NacosServer]]:
    """Private Nacos servers for one test (free to restart and kill), stopped after it.

    ``make(port=None, start=True)``: with ``start=False`` the server is only prepared (its
    ports chosen), so a test can start clients before the server is there.
    """
    _require_java_and_maven()
    started: list[NacosServer] = []

    def make(port: int | None = None, start: bool = True) -> NacosServer:
        server = NacosServer(tmp_path / f"nacos{len(started)}", port=port)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        server.stop()
