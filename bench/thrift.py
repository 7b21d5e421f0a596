"""Thrift listener benchmark: a pipelining load generator -> {server direct, meshagent thrift
listener, HAProxy tcp} -> an Apache Thrift Java server, for framed binary and framed compact.

    /work/main/.venv/bin/python bench/thrift.py [--rounds N --duration S --depth D]

Everything runs on 127.0.0.1 and is started (and stopped) here: one Apache Thrift Java
server per wire form (tests/interop/java/thrift-peer, TThreadPoolServer), one meshagent
process from this checkout (a thrift listener per form; the ``local`` registry declares the
servers; round_robin; health checks and outlier detection on) and one HAProxy in TCP mode
(``nbthread 1``). The load generator (this process, uvloop) keeps D ``ping()`` calls in
flight on one connection (multiplexed ping-pong: each reply sends the next call) for S
seconds per target, the order rotated every round; figures are medians over rounds, ratios
medians of per-round ratios.

CPU per call: the proxy process's utime+stime (/proc/PID/stat) over the run divided by the
calls answered in it. The load generator is Python too, so absolute calls/s may be bounded
by it; the ratios to HAProxy and the agent's CPU per call are the figures that matter.

``--baseline DIR`` runs another checkout's agent (``git archive REV | tar -x -C DIR``) as a
fourth target, "agent@base", in the same rotated rounds: before/after under the same noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.codec import NEED_DATA  # noqa: E402
from bench.common import cpu_us, start_haproxy_tcp  # noqa: E402
from plugins.thrift.codec import (  # noqa: E402
    Header,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    encode_header,
    frame,
)
from tests.fixtures import java_thrift  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.processes import ManagedProcess, free_port  # noqa: E402

FORMS = ["framed-binary", "framed-compact"]

# The targets of the issue, as for Dubbo (docs/benchmarks.md, "Thrift listener").
TARGET_RATE_RATIO = 0.9  # issue 20, binary and compact
TARGET_CPU_US_PER_CALL = 15.0  # issue 20


@dataclass
class Target:
    name: str
    form: str
    port: int
    pid: int | None = None
    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_per_call: list[float] = field(default_factory=list)


class PingPong(asyncio.Protocol):
    """Keeps ``depth`` ping() calls in flight; each reply sends the next call."""

    def __init__(self, proto: Proto, depth: int, stop_at: float) -> None:
        self.proto = proto
        self.depth = depth
        self.stop_at = stop_at
        self.decoder = MessageDecoder(proto, Transport.FRAMED)
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.seqid = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def call(self) -> None:
        self.seqid += 1
        head = encode_header(Header("ping", MessageType.CALL, self.seqid, self.proto))
        self.sent[self.seqid] = time.perf_counter()
        assert self.transport is not None
        self.transport.write(frame(head + b"\x00", Transport.FRAMED))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.depth):
            self.call()

    def data_received(self, data: bytes) -> None:
        self.decoder.receive_data(data)
        now = time.perf_counter()
        while (message := self.decoder.next_event()) is not NEED_DATA:
            started = self.sent.pop(message.header.seqid)  # type: ignore[union-attr]
            self.latencies.append(now - started)
            if now < self.stop_at:
                self.call()
            elif not self.sent and not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost: {exc}"))


async def ping_pong(
    port: int, proto: Proto, depth: int, duration: float
) -> tuple[int, list[float]]:
    loop = asyncio.get_running_loop()
    stop_at = time.perf_counter() + duration
    transport, protocol = await loop.create_connection(
        lambda: PingPong(proto, depth, stop_at), "127.0.0.1", port
    )
    try:
        async with asyncio.timeout(duration + 30):
            await protocol.done
    finally:
        transport.close()
    return len(protocol.latencies), protocol.latencies


def agent_config(servers: dict[str, int]) -> dict[str, Any]:
    return {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {f: [{"host": "127.0.0.1", "port": p}] for f, p in servers.items()}
                },
            }
        ],
        "services": [
            {
                "name": form,
                "protocol": "thrift",
                "lb": {"policy": "round_robin"},
                "health": {"enabled": True, "checker": "tcp", "interval_s": 5},
                "outlier": {"enabled": True},
            }
            for form in servers
        ],
        "listeners": [
            {"port": free_port(), "service": form, "protocol": "thrift"} for form in servers
        ],
        "drain_timeout_s": 1,
        "log_level": "WARNING",
    }


def rotated(items: list[Target], by: int) -> Iterator[Target]:
    by %= len(items)
    yield from items[by:] + items[:by]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="root of another checkout (`git archive REV | tar -x -C DIR`), measured as "
        "'agent@base' in the same rounds",
    )
    args = parser.parse_args(argv)

    java_thrift.build_peer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-thrift-"))
    processes: list[ManagedProcess] = []
    servers = []
    agent: AgentProcess | None = None
    base: AgentProcess | None = None
    try:
        ports = {}
        for form in FORMS:
            server = java_thrift.start_server(tmp, f"bench-{form}", form)
            servers.append(server)
            ports[form] = server.port
        agent = start_agent(tmp, agent_config(ports))
        if args.baseline is not None:
            base = start_agent(tmp / "base", agent_config(ports), root=args.baseline.resolve())
        targets: dict[str, list[Target]] = {}
        for i, form in enumerate(FORMS):
            agent.wait_endpoints(form, 1)
            haproxy, haproxy_port = start_haproxy_tcp(tmp, ports[form], f"haproxy-{form}")
            processes.append(haproxy)
            targets[form] = [
                Target("direct", form, ports[form]),
                Target("agent", form, agent.listener_port(i), agent.pid),
                Target("haproxy", form, haproxy_port, haproxy.pid),
            ]
            if base is not None:
                base.wait_endpoints(form, 1)
                targets[form].append(Target("agent@base", form, base.listener_port(i), base.pid))
        for round_no in range(args.rounds):
            for form in FORMS:
                proto = Proto.COMPACT if "compact" in form else Proto.BINARY
                for target in rotated(targets[form], round_no):
                    before = cpu_us(target.pid) if target.pid else 0.0
                    calls, latencies = uvloop.run(
                        ping_pong(target.port, proto, args.depth, args.duration)
                    )
                    target.rate.append(calls / args.duration)
                    target.p50.append(pct(latencies, 0.5) * 1e6)
                    target.p99.append(pct(latencies, 0.99) * 1e6)
                    if target.pid is not None:
                        target.cpu_per_call.append((cpu_us(target.pid) - before) / max(1, calls))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for form in FORMS:
            report(targets[form], args)
    finally:
        if agent is not None:
            agent.stop()
        if base is not None:
            base.stop()
        for process in processes:
            process.stop()
        for server in servers:
            server.stop()
    return 0


def report(targets: list[Target], args: argparse.Namespace) -> None:
    direct, agent, haproxy = targets[:3]
    print(
        f"\nThrift {direct.form} ping(), {args.depth} calls in flight on one connection, "
        f"{args.duration:g}s x {args.rounds} rounds (medians)\n"
    )
    print(f"{'target':<8} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us/call':>12}")
    for t in targets:
        cpu = f"{med(t.cpu_per_call):.1f}" if t.cpu_per_call else "-"
        print(f"{t.name:<8} {med(t.rate):>9,.0f} {med(t.p50):>8,.0f} {med(t.p99):>8,.0f} {cpu:>12}")
    rate_ratio = med([a / h for a, h in zip(agent.rate, haproxy.rate, strict=True)])
    direct_ratio = med([a / d for a, d in zip(agent.rate, direct.rate, strict=True)])
    agent_cpu = med(agent.cpu_per_call)
    print(
        f"agent/haproxy calls/s {rate_ratio:.2f}x (target >= {TARGET_RATE_RATIO:.1f}x: "
        f"{'met' if rate_ratio >= TARGET_RATE_RATIO else 'NOT met'}); "
        f"agent/direct {direct_ratio:.2f}x; agent CPU per call {agent_cpu:.1f} us "
        f"(target <= {TARGET_CPU_US_PER_CALL:.0f} us: "
        f"{'met' if agent_cpu <= TARGET_CPU_US_PER_CALL else 'NOT met'})"
    )
    if len(targets) > 3:
        base = targets[3]
        base_ratio = med([b / h for b, h in zip(base.rate, haproxy.rate, strict=True)])
        print(
            f"agent@base/haproxy calls/s {base_ratio:.2f}x; agent/agent@base calls/s "
            f"{med([a / b for a, b in zip(agent.rate, base.rate, strict=True)]):.2f}x; "
            f"CPU per call {agent_cpu:.1f} vs {med(base.cpu_per_call):.1f} us"
        )


if __name__ == "__main__":
    sys.exit(main())
