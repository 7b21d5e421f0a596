"""A real ZooKeeper 3.8 (the Debian package's jars) on a free 127.0.0.1 port, once per session.

Local to this suite until the shared tests/fixtures/zookeeper.py lands. The server can be
stopped, restarted on the same port and data dir, and frozen (SIGSTOP) by the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

JARS = Path("/usr/share/java")
CLASSPATH_JARS = [
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    "slf4j-nop.jar",
    "netty-handler.jar",
    "netty-common.jar",
    "netty-transport.jar",
    "netty-buffer.jar",
    "netty-codec.jar",
    "netty-resolver.jar",
    "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar",
    "commons-io.jar",
    "metrics-core.jar",
    "snappy-java.jar",
]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir()
        self.config = workdir / "zoo.cfg"
        # tickTime 200 ms: sessions of 1-4 s are allowed (2..20 ticks), keeping tests fast.
        self.config.write_text(
            "\n".join(
                [
                    "tickTime=200",
                    f"dataDir={self.data_dir}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "minSessionTimeout=400",
                    "maxSessionTimeout=20000",
                    "4lw.commands.whitelist=ruok,srvr",
                    "admin.enableServer=false",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.workdir / "zookeeper.log").open("ab") as log:
            self.process = self._spawn(log)
        self._wait_ready()

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        classpath = ":".join(str(JARS / jar) for jar in CLASSPATH_JARS)
        return subprocess.Popen(
            [
                "java",
                "-Xmx256m",
                "-cp",
                classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(self.config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.process.returncode}")
            try:
                if four_letter(self.port, "ruok") == "imok":
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling interval of a bounded wait, not synchronisation
        self.stop()
        raise RuntimeError(f"ZooKeeper did not answer ruok within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen JVM cannot handle SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zookeeper(zookeeper_server: ZooKeeperServer) -> ZooKeeperServer:
    """The shared server, started again if a previous test left it stopped or frozen."""
    server = zookeeper_server
    if server.process is not None and server.process.poll() is None:
        server.thaw()
    else:
        server.start()
    return server
