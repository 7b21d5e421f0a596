"""Dubbo listener benchmark: Java consumer ``bench`` -> {provider direct, meshagent dubbo
listener, HAProxy tcp} -> the Java provider.

    /work/main/.venv/bin/python bench/dubbo.py [--rounds N --duration S --threads T]

Everything runs on 127.0.0.1 and is started (and stopped) here: one Java Dubbo 3.3 provider
(tests/interop/java/dubbo-peer, full JIT), one meshagent process from this checkout (a dubbo
listener; the embedded ``local`` registry declares the provider; round_robin; health checks
and outlier detection on), one HAProxy in TCP mode with ``nbthread 1``. Each round runs the
consumer's ``bench`` mode (T threads calling echo(16 bytes) back to back over one shared
connection, Dubbo's default) once per target, the order rotated every round; figures are
medians over rounds, ratios medians of per-round ratios.

CPU per frame: the proxy process's on-CPU time (all threads' /proc/PID/task/*/schedstat,
nanoseconds; /proc/PID/stat's utime+stime count 10 ms ticks) over the whole consumer run
divided by the Dubbo frames it relayed in that time. For the agent the frames are
counted by the agent itself (requests answered by the provider, from /v1/clusters, x2: a
request and its response), warm-up included, like the CPU; for HAProxy, which cannot count
frames, the consumer's calls (x2) are scaled by the same calls/requests proportion as the
agent's run of that round (warm-up share), which is a close estimate.

The window is the whole consumer run, JVM start and exit included (seconds on a loaded
machine), during which each proxy also spends its idle CPU (the agent's admin server,
health checks, timers). That idle rate is measured before the rounds and reported, with
the CPU per frame net of it ("net" = (CPU - idle rate x window) / frames).

``--telemetry`` adds agents from this checkout with other telemetry settings, in the same
rotated rounds: "obs-off" (no call context, no metrics), "metrics" (metrics only, no
call context), "trace-100%" and "trace-1%"
(tracing on, exporting over OTLP/gRPC to a real OpenTelemetry Collector, see
tests/fixtures/otel_collector.py). "agent" is the default config (call context and
metrics on); each is compared with "obs-off".

``--baseline DIR`` runs another checkout's agent (``git archive REV | tar -x -C DIR``) as a
fourth target, "agent@base", in the same rotated rounds: before/after under the same noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_us, start_haproxy_tcp  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.java_dubbo import (  # noqa: E402
    BENCH_JVM_ARGS,
    INTERFACE,
    build_peer,
    run_bench,
    start_provider,
)
from tests.fixtures.otel_collector import start_collector  # noqa: E402
from tests.fixtures.processes import ManagedProcess, free_port  # noqa: E402

# The targets of the issue (docs/benchmarks.md, "Dubbo listener").
TARGET_RATE_RATIO = 1.0  # agent frames/s >= 1.0x HAProxy-TCP's
TARGET_CPU_US_PER_FRAME = 20.0  # issue 20 (compiled hot paths)


def idle_us_per_s(pid: int, seconds: float) -> float:
    before, start = cpu_us(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_us(pid) - before) / (time.monotonic() - start)


@dataclass
class Target:
    name: str
    port: int
    pid: int | None = None
    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    cpu_per_frame: list[float] = field(default_factory=list)
    net_per_frame: list[float] = field(default_factory=list)
    agent: AgentProcess | None = None
    idle: float = 0.0  # us of CPU per second with no traffic


def agent_config(provider_port: int, telemetry: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "telemetry": telemetry or {},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {INTERFACE: [{"host": "127.0.0.1", "port": provider_port}]}},
            }
        ],
        "services": [
            {
                "name": INTERFACE,
                "registry": "local",
                "protocol": "dubbo",
                "lb": {"policy": "round_robin"},
                "health": {"enabled": True, "checker": "tcp", "interval_s": 5},
                "outlier": {"enabled": True},
            }
        ],
        "listeners": [{"port": free_port(), "service": INTERFACE, "protocol": "dubbo"}],
        "drain_timeout_s": 1,
        "log_level": "WARNING",
    }


def agent_requests(agent: AgentProcess) -> int:
    return sum(int(e["requests"]) for e in agent.endpoints(INTERFACE))


def rotated(items: list[Target], by: int) -> Iterator[Target]:
    by %= len(items)
    yield from items[by:] + items[:by]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--payload", type=int, default=16)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="root of another checkout (`git archive REV | tar -x -C DIR`), measured as "
        "'agent@base' in the same rounds",
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to measure idle CPU")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also measure agents with telemetry off, tracing at 100%% and at 1%%",
    )
    args = parser.parse_args(argv)

    build_peer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dubbo-"))
    provider = start_provider(tmp, jvm_args=BENCH_JVM_ARGS, provider_id="bench")
    haproxy: ManagedProcess | None = None
    agents: list[AgentProcess] = []
    stoppers: list[Callable[[], None]] = []
    try:
        haproxy, haproxy_port = start_haproxy_tcp(tmp, provider.port)
        agent = start_agent(tmp, agent_config(provider.port))
        agents.append(agent)
        agent.wait_endpoints(INTERFACE, 1)
        targets = [
            Target("direct", provider.port),
            Target("agent", agent.listener_port(), agent.pid, agent=agent),
            Target("haproxy", haproxy_port, haproxy.pid),
        ]
        if args.baseline is not None:
            base = start_agent(
                tmp / "base", agent_config(provider.port), root=args.baseline.resolve()
            )
            agents.append(base)
            base.wait_endpoints(INTERFACE, 1)
            targets.append(Target("agent@base", base.listener_port(), base.pid, agent=base))
        if args.telemetry:
            collector = start_collector(tmp / "otelcol")
            stoppers.append(collector.stop)
            tracing = {"exporter": "otlp_grpc", "endpoint": collector.grpc_endpoint}
            variants = {
                "obs-off": {"metrics": {"enabled": False}, "context": {"enabled": False}},
                "metrics": {"context": {"enabled": False}},
                "trace-100%": {"tracing": {"enabled": True, "sample_ratio": 1.0, **tracing}},
                "trace-1%": {"tracing": {"enabled": True, "sample_ratio": 0.01, **tracing}},
            }
            for name, telemetry in variants.items():
                extra = start_agent(
                    tmp / name.replace("%", "pct"),
                    agent_config(provider.port, telemetry),
                    name=f"agent-{name.replace('%', 'pct')}",
                )
                agents.append(extra)
                extra.wait_endpoints(INTERFACE, 1)
                targets.append(Target(name, extra.listener_port(), extra.pid, agent=extra))
        for target in targets:
            if target.pid is not None:
                target.idle = idle_us_per_s(target.pid, args.idle)
        warm_share: list[float] = []  # agent frames / consumer-counted frames, per round
        for round_no in range(args.rounds):
            for target in rotated(targets, round_no):
                before_cpu = cpu_us(target.pid) if target.pid else 0.0
                before_requests = agent_requests(target.agent) if target.agent else 0
                started = time.monotonic()
                summary = run_bench(
                    url=f"dubbo://127.0.0.1:{target.port}",
                    threads=args.threads,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    payload_bytes=args.payload,
                )
                target.rate.append(float(summary["calls_per_s"]))
                target.p50.append(float(summary["p50_us"]))
                target.p99.append(float(summary["p99_us"]))
                target.errors.append(int(summary["errors"]))
                calls = int(summary["calls"])
                if target.pid is None:
                    continue
                spent = cpu_us(target.pid) - before_cpu
                window = time.monotonic() - started
                if target.agent is not None:
                    frames = 2 * (agent_requests(target.agent) - before_requests)
                    warm_share.append(frames / max(1, 2 * calls))
                else:
                    share = warm_share[-1] if warm_share else 1.0
                    frames = round(2 * calls * share)
                target.cpu_per_frame.append(spent / max(1, frames))
                target.net_per_frame.append((spent - target.idle * window) / max(1, frames))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        report(targets, args)
    finally:
        for agent in agents:
            agent.stop()
        if haproxy is not None:
            haproxy.stop()
        for stop in stoppers:
            stop()
        provider.stop()
    return 0


def report(targets: list[Target], args: argparse.Namespace) -> None:
    direct, agent, haproxy = targets[:3]
    base = next((t for t in targets if t.name == "agent@base"), None)
    off = next((t for t in targets if t.name == "obs-off"), None)
    print(
        f"\nDubbo echo({args.payload} B), {args.threads} consumer threads, one connection, "
        f"{args.duration:g}s x {args.rounds} rounds (medians; calls/s = request frames/s)\n"
    )
    print(
        f"{'target':<10} {'calls/s':>9} {'p50 us':>8} {'p99 us':>8} {'errors':>6} "
        f"{'CPU us/frame':>13} {'net of idle':>11} {'idle us/s':>9}"
    )
    for t in targets:
        cpu = f"{med(t.cpu_per_frame):.1f}" if t.cpu_per_frame else "-"
        net = f"{med(t.net_per_frame):.1f}" if t.net_per_frame else "-"
        idle = f"{t.idle:,.0f}" if t.pid else "-"
        print(
            f"{t.name:<10} {med(t.rate):>9,.0f} {med(t.p50):>8,.0f} {med(t.p99):>8,.0f} "
            f"{sum(t.errors):>6} {cpu:>13} {net:>11} {idle:>9}"
        )
    rate_ratio = med([a / h for a, h in zip(agent.rate, haproxy.rate, strict=True)])
    cpu_ratio = med(
        [a / h for a, h in zip(agent.cpu_per_frame, haproxy.cpu_per_frame, strict=True)]
    )
    direct_ratio = med([a / d for a, d in zip(agent.rate, direct.rate, strict=True)])
    agent_cpu = med(agent.cpu_per_frame)
    print()
    print(
        f"agent/haproxy calls/s   {rate_ratio:.2f}x  (target >= {TARGET_RATE_RATIO:.1f}x: "
        f"{'met' if rate_ratio >= TARGET_RATE_RATIO else 'NOT met'})"
    )
    print(f"agent/direct calls/s    {direct_ratio:.2f}x")
    print(f"agent/haproxy CPU/frame {cpu_ratio:.2f}x")
    print(
        f"agent CPU per frame     {agent_cpu:.1f} us  (target <= {TARGET_CPU_US_PER_FRAME:.0f} us: "
        f"{'met' if agent_cpu <= TARGET_CPU_US_PER_FRAME else 'NOT met'})"
    )
    print(
        f"per-round agent calls/s {[round(x) for x in agent.rate]}, "
        f"haproxy {[round(x) for x in haproxy.rate]}, direct {[round(x) for x in direct.rate]}"
    )
    print(
        f"per-round agent CPU us/frame {[round(x, 1) for x in agent.cpu_per_frame]}, "
        f"haproxy {[round(x, 1) for x in haproxy.cpu_per_frame]}"
    )
    if base is not None:
        cpu_vs_base = med(
            [a / b for a, b in zip(agent.cpu_per_frame, base.cpu_per_frame, strict=True)]
        )
        rate_vs_base = med([a / b for a, b in zip(agent.rate, base.rate, strict=True)])
        print(
            f"agent/agent@base CPU/frame {cpu_vs_base:.2f}x, calls/s {rate_vs_base:.2f}x; "
            f"per-round agent@base calls/s {[round(x) for x in base.rate]}, "
            f"CPU us/frame {[round(x, 1) for x in base.cpu_per_frame]}"
        )

    if off is not None:
        print("\ntelemetry cost (median of per-round ratios to obs-off; calls/s and CPU/frame):")
        for t in targets:
            if t.agent is None or t is off or t is base:
                continue
            rate = med([a / b for a, b in zip(t.rate, off.rate, strict=True)])
            cpu = med([a / b for a, b in zip(t.cpu_per_frame, off.cpu_per_frame, strict=True)])
            print(f"  {t.name:<10} calls/s {rate:.3f}x   CPU/frame {cpu:.3f}x")


if __name__ == "__main__":
    sys.exit(main())
