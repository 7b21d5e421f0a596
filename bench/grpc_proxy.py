"""gRPC listener benchmark: grpc-go load generator -> {grpc-go server direct, meshagent grpc
listener (the h2 relay), HAProxy tcp} -> the grpc-go server.

    /work/main/.venv/bin/python bench/grpc_proxy.py [--rounds N --duration S --concurrency C]

Everything runs on 127.0.0.1 and is started (and stopped) here: the grpc-go peer
(tests/interop/go/grpcpeer) as the server (it echoes any method) and as the load generator
(``load`` mode: C goroutines making unary calls of 16 bytes back to back over one HTTP/2
connection, then one bidirectional stream of 1 MB messages), one meshagent process from
this checkout (a grpc listener; ``local`` registry; round_robin; tcp health checks and
outlier detection on) and one HAProxy in TCP mode with ``nbthread 1`` (an L4 relay: it
balances per connection, which for gRPC means not at all; the agent balances per call).

Each round runs every target once, the order rotated every round; figures are medians over
rounds, ratios medians of per-round ratios. CPU per call: the proxy process's utime+stime
(/proc/PID/stat) over the unary run divided by the calls made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_us, start_haproxy_tcp  # noqa: E402
from tests.fixtures.agent_process import start_agent  # noqa: E402
from tests.fixtures.grpc_peer import GoPeer, build_go_peer  # noqa: E402
from tests.fixtures.processes import ManagedProcess, free_port  # noqa: E402

SERVICE = "bench.Echo"


@dataclass
class Target:
    name: str
    port: int
    pid: int | None = None
    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    cpu_per_call: list[float] = field(default_factory=list)
    mb_per_s: list[float] = field(default_factory=list)


def agent_config(server_port: int) -> dict[str, Any]:
    return {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {SERVICE: [{"host": "127.0.0.1", "port": server_port}]}},
            }
        ],
        "services": [
            {
                "name": SERVICE,
                "protocol": "grpc",
                "health": {"enabled": True, "checker": "tcp", "interval_s": 5},
                "outlier": {"enabled": True},
            }
        ],
        "listeners": [{"port": free_port(), "service": SERVICE, "protocol": "grpc"}],
        "drain_timeout_s": 1,
        "log_level": "WARNING",
    }


def run_load(binary: Path, port: int, *args: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [binary, "load", "-target", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream-duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    binary = build_go_peer(tmp)
    haproxy: ManagedProcess | None = None
    with GoPeer(tmp, binary, "go-server") as server:
        agent = start_agent(tmp / "agent", agent_config(server.port))
        try:
            agent.wait_endpoints(SERVICE, 1)
            haproxy, haproxy_port = start_haproxy_tcp(tmp, server.port)
            targets = [
                Target("direct", server.port),
                Target("agent", agent.listener_port(), agent.pid),
                Target("haproxy", haproxy_port, haproxy.pid),
            ]
            for round_no in range(args.rounds):
                turn = round_no % len(targets)
                for target in targets[turn:] + targets[:turn]:
                    before = cpu_us(target.pid) if target.pid else 0.0
                    unary = run_load(
                        binary,
                        target.port,
                        "-duration",
                        str(args.duration),
                        "-concurrency",
                        str(args.concurrency),
                        timeout=args.duration + 60,
                    )
                    if target.pid and unary["calls"]:
                        target.cpu_per_call.append((cpu_us(target.pid) - before) / unary["calls"])
                    target.rate.append(unary["rate"])
                    target.p50.append(unary["p50_us"])
                    target.p99.append(unary["p99_us"])
                    target.errors.append(unary["errors"])
                    stream = run_load(
                        binary,
                        target.port,
                        "-stream",
                        "-size",
                        str(1024 * 1024),
                        "-duration",
                        str(args.stream_duration),
                        timeout=args.stream_duration + 60,
                    )
                    target.mb_per_s.append(stream["mb_per_s"])
                    print(f"round {round_no + 1} {target.name}: {unary} {stream}", flush=True)
            report(targets, args)
        finally:
            agent.stop()
            if haproxy is not None:
                haproxy.stop()
    return 0


def report(targets: list[Target], args: argparse.Namespace) -> None:
    direct, agent, haproxy = targets
    print(
        f"\ngRPC unary 16 B, {args.concurrency} in flight over one connection, "
        f"{args.duration:g}s x {args.rounds} rounds (medians)\n"
    )
    print(
        f"{'target':8} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us/call':>12} "
        f"{'1MB stream MB/s':>16} {'errors':>7}"
    )
    for t in targets:
        cpu = f"{med(t.cpu_per_call):.1f}" if t.cpu_per_call else "-"
        print(
            f"{t.name:8} {med(t.rate):9.0f} {med(t.p50):8.0f} {med(t.p99):8.0f} {cpu:>12} "
            f"{med(t.mb_per_s):16.1f} {sum(t.errors):7d}"
        )
    ratio = med([a / h for a, h in zip(agent.rate, haproxy.rate, strict=True)])
    direct_ratio = med([a / d for a, d in zip(agent.rate, direct.rate, strict=True)])
    cpu_ratio = med([a / h for a, h in zip(agent.cpu_per_call, haproxy.cpu_per_call, strict=True)])
    print(
        f"\nagent/haproxy calls/s {ratio:.2f}x, agent/direct {direct_ratio:.2f}x, "
        f"agent/haproxy CPU per call {cpu_ratio:.1f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
