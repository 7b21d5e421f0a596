"""The Nacos fixture: a real server that serves config and naming, and restarts with its data."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.nacos import NacosServer

pytestmark = pytest.mark.integration


def test_serves_and_restarts_with_its_data(nacos_factory: Callable[..., NacosServer]) -> None:
    nacos = nacos_factory()
    state = nacos.http("GET", "/v3/admin/core/state")
    assert state["startup_mode"] == "standalone"
    assert state["server_port"] == str(nacos.port)

    params = {"dataId": "kept", "groupName": "fixture", "content": "v1"}
    assert nacos.http("POST", "/v3/admin/cs/config", params) is True

    pid = nacos.process.pid
    nacos.restart()
    assert nacos.process.pid != pid
    got = nacos.http("GET", "/v3/admin/cs/config", {"dataId": "kept", "groupName": "fixture"})
    assert got["content"] == "v1"

    nacos.stop()
    assert not nacos.running
    assert not nacos.ready()
