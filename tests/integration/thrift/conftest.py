"""Fixtures of the Thrift integration tests: thriftpy2 servers and the plugin's entry point."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.thrift_server import FORMS, ThriftServer, start_server


@pytest.fixture(scope="session", autouse=True)
def thrift_entry_point(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Make ``thrift`` a meshagent.protocols entry point for agent processes.

    pyproject.toml declares it (``thrift = "plugins.thrift.protocol:PLUGIN"``); until the
    venv is reinstalled from it, a dist-info on PYTHONPATH declares the same entry point.
    Once installed, both are found with the same value, which the plugin loader accepts.
    """
    root = tmp_path_factory.mktemp("thrift-entry-point")
    info = root / "meshagent_thrift_test-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: meshagent-thrift-test\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[meshagent.protocols]\nthrift = plugins.thrift.protocol:PLUGIN\n", encoding="utf-8"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        )
        yield


@pytest.fixture(scope="session")
def thrift_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[ThriftServer]]]:
    """Two thriftpy2 servers per wire form, for the session."""
    workdir: Path = tmp_path_factory.mktemp("thrift-servers")
    servers: dict[str, list[ThriftServer]] = {}
    try:
        for form in FORMS:
            servers[form] = [start_server(workdir, f"{form}-{i}", form) for i in "ab"]
        yield servers
    finally:
        for group in servers.values():
            for server in group:
                server.stop()
