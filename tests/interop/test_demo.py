"""`make demo`'s script, run headless: it starts ZooKeeper, the Java provider and the agent,
and the curl line it prints calls the Java service through the agent."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.processes import ManagedProcess, free_port, port_open, wait_until
from tests.fixtures.programs import require

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_a_call_that_reaches_the_java_provider(
    dubbo_peer_jar: Path, tmp_path: Path
) -> None:
    listener = free_port()
    demo = ManagedProcess(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--admin-port",
            "0",
            "--listener-port",
            str(listener),
            "--workdir",
            str(tmp_path / "demo"),
        ],
        name="make-demo",
        log_path=tmp_path / "demo.log",
        term_timeout=60,
    )
    demo.start()
    try:
        printed = demo.wait_for_line(r"^  (?P<command>curl .+)$", 180)["command"]
        demo.wait_for_line(r"^Ctrl-C stops everything\.$", 5)
        zookeeper = demo.wait_for_line(r"^ZooKeeper\s+127\.0\.0\.1:(?P<port>\d+)$", 5)["port"]
        argv = shlex.split(printed)
        assert argv[0] == "curl"
        done = subprocess.run(
            [require("curl"), *argv[1:]], capture_output=True, text=True, timeout=30, check=True
        )
        assert json.loads(done.stdout)["result"] == "Hello, world", done.stdout
        assert port_open("127.0.0.1", listener)
        # Ctrl-C: everything it started stops, and it exits cleanly.
        demo.send_signal(signal.SIGINT)
        wait_until(lambda: not demo.running, 60, what="the demo stopped")
        assert demo.returncode == 0, demo.tail()
        assert not port_open("127.0.0.1", listener)
        assert not port_open("127.0.0.1", int(zookeeper))
    finally:
        demo.stop()
