"""Idle cost: the agent's CPU per second when no call is made (issue 20, part 4).

The agent runs with ``--services`` services on the embedded registry, each with one
endpoint, a TCP listener and active TCP health checks at the default interval (5 s); its
API port is open. HAProxy 2.6 (one thread) runs the same shape in the same rounds: one
frontend and one backend per service, ``check inter 5s``. Both are measured over the same
windows, interleaved, from /proc schedstat (bench/common.py ``cpu_us``).

The endpoints are plain listening sockets in this process (a health check only connects).

    .venv/bin/python bench/idle.py --rounds 3 --window 20
    MESHAGENT_PURE_PYTHON=1 .venv/bin/python bench/idle.py   # the same tree interpreted
"""

from __future__ import annotations

import argparse
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_us
from tests.fixtures.agent_process import start_agent
from tests.fixtures.processes import ManagedProcess, free_port

TARGET_IDLE_US_PER_S = 200.0  # issue 20: 10 services, active health checks on


class Endpoints:
    """Listening sockets that accept and close (what a TCP health check needs)."""

    def __init__(self, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.create_server(("127.0.0.1", 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.sockets.append(sock)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self.sockets]

    def _serve(self) -> None:
        while not self.stopped.is_set():
            for key, _ in self.selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    conn, _addr = sock.accept()
                except BlockingIOError:
                    continue
                conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        for sock in self.sockets:
            sock.close()


def agent_config(ports: list[int], health: bool) -> dict[str, object]:
    names = [f"svc{i}" for i in range(len(ports))]
    return {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        name: [{"host": "127.0.0.1", "port": port}]
                        for name, port in zip(names, ports, strict=True)
                    }
                },
            }
        ],
        "services": [
            {
                "name": name,
                "registry": "local",
                "protocol": "tcp",
                "health": {"enabled": health, "interval_s": 5},
            }
            for name in names
        ],
        "listeners": [
            {"name": f"out-{name}", "port": free_port(), "service": name, "protocol": "tcp"}
            for name in names
        ],
    }


def start_haproxy(tmp: Path, ports: list[int], health: bool) -> ManagedProcess:
    lines = [
        "global",
        "    nbthread 1",
        "defaults",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
    ]
    for i, port in enumerate(ports):
        lines += [
            f"frontend f{i}",
            f"    bind 127.0.0.1:{free_port()}",
            f"    default_backend b{i}",
            f"backend b{i}",
            f"    server s{i} 127.0.0.1:{port}" + (" check inter 5s" if health else ""),
        ]
    conf = tmp / "haproxy.cfg"
    conf.write_text("\n".join(lines) + "\n")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = ManagedProcess(
        [haproxy, "-db", "-f", str(conf)], name="haproxy", log_path=tmp / "haproxy.log"
    )
    process.start()
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument(
        "--no-health", action="store_true", help="health checks off (what the rest costs)"
    )
    args = parser.parse_args(argv)

    endpoints = Endpoints(args.services)
    tmp = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    agent = start_agent(tmp / "agent", agent_config(endpoints.ports, not args.no_health))
    haproxy = start_haproxy(tmp, endpoints.ports, not args.no_health)
    assert agent.process.pid is not None and haproxy.pid is not None
    pids = {"agent": agent.process.pid, "haproxy": haproxy.pid}
    rates: dict[str, list[float]] = {name: [] for name in pids}
    try:
        time.sleep(args.settle)  # start-up work (imports, first probes) is not idle cost
        for round_no in range(args.rounds):
            # Both over the same window: shared machines drift, ratios within a round hold.
            before = {name: cpu_us(pid) for name, pid in pids.items()}
            started = time.monotonic()
            time.sleep(args.window)
            elapsed = time.monotonic() - started
            for name, pid in pids.items():
                rates[name].append((cpu_us(pid) - before[name]) / elapsed)
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        agent.process.stop()
        haproxy.stop()
        endpoints.close()

    agent_rate = statistics.median(rates["agent"])
    haproxy_rate = statistics.median(rates["haproxy"])
    checks = "no health checks" if args.no_health else "health checks every 5 s"
    print(
        f"\nidle, {args.services} services with TCP listeners and {checks}, "
        f"{args.rounds} x {args.window:g} s (medians)\n"
    )
    for name, rate in (("agent", agent_rate), ("haproxy", haproxy_rate)):
        each = [round(r) for r in rates[name]]
        print(f"{name:8} {rate:8.0f} us CPU per second   rounds {each}")
    verdict = "met" if agent_rate <= TARGET_IDLE_US_PER_S else "NOT met"
    ratio = agent_rate / max(haproxy_rate, 1.0)
    print(f"agent/haproxy {ratio:.2f}x; target <= {TARGET_IDLE_US_PER_S:.0f} us/s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
