"""Workers benchmark (issue 26): one agent with ``workers: 1`` against one with ``workers: 2``.

    /work/main/.venv/bin/python bench/workers.py [--rounds N --duration S --connections C]

Everything on 127.0.0.1, started and stopped here: one nginx (one worker process, a tiny
static answer) as the provider; two agents from this checkout, each with a TCP listener
and an HTTP listener to it (the embedded registry, round_robin, no health checks), one
with ``workers: 1`` and one with ``workers: 2``. The load generator (wrk, one thread) and
nginx are pinned to CPU 0 with ``taskset`` so that the agents have CPU 1 to themselves
and share CPU 0 with them: on a 2-core machine this is the only way a second worker has a
core to use at all, and it is why the figure here is a floor, not the scaling a node with
free cores sees (docs/workers.md says what to expect there).

``--cpu-per-worker Q`` measures scaling as a node with a free core per worker would see it,
which a 2-core machine cannot give whole: every serving process (the one process of
``workers: 1``, each worker of ``workers: 2``) gets a cgroup CPU quota of Q CPUs of its own
(cgroup v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``, a 10 ms period), so each worker has
exactly "a core" of Q, and wrk and nginx run unpinned on what is left (2 - 2Q CPUs, enough
for the second worker's load when Q is small). The agent is then what limits in both
configurations, and the ratio says whether a second worker's core turns into throughput
(nothing shared per request, the kernel's spread of connections even). Q is the quota of
one worker; the supervisor and the zygote are left unlimited (they are not on the request
path; their CPU is counted in the agent's CPU per request all the same).

Rounds are interleaved (workers: 1 then 2, the order rotated each round) so a noisy
neighbour hits both alike; figures are medians over rounds, ratios medians of per-round
ratios. Per target: requests/s under load (``--connections``) and p50/p99, the agent's CPU
per request (every process of it: supervisor, zygote and workers, from schedstat), the
p50 at low load (wrk -c1: the latency a hop adds); then each process's memory (private
= what it alone holds, PSS = its share of what it shares) and the supervisor's CPU while
idle.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from bench.http_proxy import run_wrk, start_nginx  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.processes import free_port  # noqa: E402

# One timer every 2.5 s (the supervisor's watchdog tick at worker_watchdog_s 5), nothing else.
BARE_LOOP = """
import asyncio, uvloop
async def main():
    loop = asyncio.get_running_loop()
    def tick():
        loop.call_later(2.5, tick)
    tick()
    await asyncio.Event().wait()
uvloop.run(main())
"""

# The targets (docs/benchmarks.md).
TARGET_SCALING = 1.7  # throughput with 2 workers >= 1.7x one worker
TARGET_WORKER_MB = 25.0  # memory per additional worker
TARGET_SUPERVISOR_IDLE_US = 300.0  # supervisor CPU per second while idle


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (the supervisor, its zygote, the workers)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children)
    return found


def agent_cpu_us(pid: int) -> float:
    total = 0.0
    for process in descendants(pid):
        with contextlib.suppress(OSError):
            total += cpu_us(process)
    return total


def memory_kb(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "private": fields["Private_Clean"] + fields["Private_Dirty"],
    }


class CpuQuotas:
    """A cgroup per serving process, each limited to ``cpus`` CPUs (``--cpu-per-worker``).

    cgroup v1's cpu controller where it is mounted (``/sys/fs/cgroup/cpu``), else cgroup
    v2 (``cpu.max``, the cpu controller enabled for the children of a group of ours).
    Needs root; the groups are removed by :meth:`close`.
    """

    PERIOD_US = 10_000  # a short period: a throttled worker waits at most 10 ms
    MIN_QUOTA_US = 1_000  # the kernel's smallest quota per period

    def __init__(self, cpus: float) -> None:
        self.cpus = cpus
        v1 = Path("/sys/fs/cgroup/cpu")
        self.v1 = v1.is_dir() and (v1 / "cpu.cfs_quota_us").exists()
        self.root = (v1 if self.v1 else Path("/sys/fs/cgroup")) / f"meshagent-bench-{os.getpid()}"
        self.root.mkdir()
        if not self.v1:
            (self.root / "cgroup.subtree_control").write_text("+cpu")
        self.groups: list[Path] = []

    @classmethod
    def quota_and_period(cls, cpus: float) -> tuple[int, int]:
        """Microseconds of CPU per period, and the period: 10 ms, longer where the quota
        would be under the kernel's 1 ms minimum (0.06 CPU: 1,000 of 16,667)."""
        period = max(cls.PERIOD_US, math.ceil(cls.MIN_QUOTA_US / cpus))
        return round(cpus * period), period

    def limit(self, pid: int) -> None:
        group = self.root / f"p{pid}"
        group.mkdir()
        quota, period = self.quota_and_period(self.cpus)
        if self.v1:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {period}")
        (group / "cgroup.procs").write_text(str(pid))
        self.groups.append(group)

    def throttled_s(self) -> float:
        """Seconds the limited processes spent throttled (each group's sum)."""
        total = 0.0
        for group in self.groups:
            stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
            # v1 counts nanoseconds, v2 microseconds.
            total += int(stat.get("throttled_time", 0)) / 1e9
            total += int(stat.get("throttled_usec", 0)) / 1e6
        return total

    def close(self) -> None:
        # A group can be removed once empty: its processes go back to the root group.
        parent = self.root.parent / "cgroup.procs"
        for group in [*self.groups, self.root]:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        parent.write_text(pid)
                group.rmdir()


def serving_pids(agent: AgentProcess) -> list[int]:
    """The processes that serve requests: the one process, or each worker."""
    with agent.client() as client:
        workers = client.get("/readyz").json().get("workers")
    return [agent.pid] if not workers else [int(worker["pid"]) for worker in workers]


def agent_config(upstream: int, workers: int) -> dict[str, Any]:
    return {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        name: [{"host": "127.0.0.1", "port": upstream}] for name in ("web", "raw")
                    }
                },
            }
        ],
        "services": [
            {"name": "web", "registry": "local", "protocol": "http", "health": {"enabled": False}},
            {"name": "raw", "registry": "local", "protocol": "tcp", "health": {"enabled": False}},
        ],
        "listeners": [
            {"port": free_port(), "service": "raw", "protocol": "tcp"},
            {"port": free_port(), "service": "web", "protocol": "http"},
        ],
        "workers": workers,
        "log_level": "WARNING",
        "drain_timeout_s": 1,
    }


@dataclass
class Target:
    name: str
    agent: AgentProcess
    rps: dict[str, list[float]] = field(default_factory=dict)
    p50: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    low_p50: dict[str, list[float]] = field(default_factory=dict)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    parser.add_argument(
        "--cpu-per-worker",
        type=float,
        default=None,
        metavar="Q",
        help="a cgroup CPU quota of Q CPUs for each serving process (the one process, each "
        "worker); wrk and nginx unpinned (a core per worker, emulated)",
    )
    parser.add_argument(
        "--dubbo",
        action="store_true",
        help="instead: the Dubbo listener, the Java consumer's bench mode over 2 connections "
        "(--threads) to the Java provider",
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="the Java consumer's calling threads (--dubbo)"
    )
    args = parser.parse_args(argv)
    if args.dubbo:
        return dubbo(args)
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian: wrk, nginx, util-linux)")
    quotas = CpuQuotas(args.cpu_per_worker) if args.cpu_per_worker else None
    pin = None if quotas else 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    nginx, ports, _ = start_nginx(tmp)
    nginx_pids = descendants(nginx.pid or 0)
    for pid in nginx_pids if pin is not None else ():
        subprocess.run(["taskset", "-pc", str(pin), str(pid)], check=True, capture_output=True)
    targets = [
        Target(f"workers={n}", start_agent(tmp / f"w{n}", agent_config(ports[0], n), name=f"w{n}"))
        for n in (1, 2)
    ]
    try:
        for target in targets:
            target.agent.wait_ready()
            for pid in serving_pids(target.agent) if quotas else ():
                quotas.limit(pid)
        # Idle first: the supervisor's own CPU with nothing to serve, beside a bare uvloop
        # process woken as often (the watchdog's tick), measured in the same window: on a
        # virtual machine a wake-up alone costs hundreds of microseconds.
        supervisor = targets[1].agent.pid
        floor = subprocess.Popen([sys.executable, "-c", BARE_LOOP])
        time.sleep(1)
        before, floor_before = cpu_us(supervisor), cpu_us(floor.pid)
        time.sleep(20)
        idle_us = (cpu_us(supervisor) - before) / 20
        floor_us = (cpu_us(floor.pid) - floor_before) / 20
        floor.kill()
        floor.wait()
        for round_number in range(args.rounds):
            order = targets if round_number % 2 == 0 else targets[::-1]
            for target in order:
                for kind, port in zip(("tcp", "http"), target.agent.listener_ports, strict=True):
                    cpu_before = agent_cpu_us(target.agent.pid)
                    result = run_wrk(port, args.duration, args.connections, cpu=pin)
                    spent = agent_cpu_us(target.agent.pid) - cpu_before
                    if not result["requests"]:
                        raise SystemExit(f"{kind} {target.name}: no request answered: {result}")
                    target.rps.setdefault(kind, []).append(result["rate"])
                    target.p50.setdefault(kind, []).append(result["p50"] * 1000)
                    target.p99.setdefault(kind, []).append(result["p99"] * 1000)
                    target.cpu.setdefault(kind, []).append(spent / result["requests"])
                    low = run_wrk(port, 3, 1, cpu=pin)
                    target.low_p50.setdefault(kind, []).append(low["p50"] * 1000)
        throttled = quotas.throttled_s() if quotas else 0.0
        restart_ms = worker_restart_ms(targets[1].agent)
        report(targets, idle_us, floor_us, restart_ms, args)
        if quotas:
            print(f"time throttled by the quotas, all processes: {throttled:.1f} s")
    finally:
        for target in targets:
            target.agent.stop()
        nginx.stop()
        if quotas:
            quotas.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def accepted_by_worker(agent: AgentProcess) -> dict[str, float]:
    """Connections each process's listeners accepted so far (the merged scrape's series)."""
    accepted: dict[str, float] = {}
    for line in agent.metrics().splitlines():
        if line.startswith("meshagent_listener_connections_total{"):
            labels, value = line.rsplit(" ", 1)
            worker = re.search(r'worker="([^"]*)"', labels)
            key = worker.group(1) if worker else "0"
            accepted[key] = accepted.get(key, 0.0) + float(value)
    return accepted


def dubbo(args: argparse.Namespace) -> int:
    """The Dubbo listener, workers 1 and 2, interleaved: the Java consumer's ``bench``
    (echo of 16 bytes, ``--threads`` callers) over two connections (``connections=2`` on its URL, so
    that the kernel can give each worker one). With ``--cpu-per-worker`` each serving
    process is limited as for TCP and HTTP. Each run of ``workers: 2`` reports how the
    kernel placed the two connections: SO_REUSEPORT hashes each connection to a worker, so
    two connections land on the same one in about half the runs, and such a run can only
    show one worker's throughput."""
    from bench.dubbo import agent_config as dubbo_config
    from tests.fixtures.java_dubbo import (
        BENCH_JVM_ARGS,
        build_peer,
        run_bench,
        start_provider,
    )

    build_peer()
    quotas = CpuQuotas(args.cpu_per_worker) if args.cpu_per_worker else None
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-dubbo-"))
    provider = start_provider(tmp, jvm_args=BENCH_JVM_ARGS, provider_id="bench")
    agents: dict[int, AgentProcess] = {}
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    placements: list[str] = []
    try:
        for count in (1, 2):
            config = {**dubbo_config(provider.port), "workers": count}
            agents[count] = start_agent(tmp / f"w{count}", config, name=f"w{count}")
            agents[count].wait_ready()
            for pid in serving_pids(agents[count]) if quotas else ():
                quotas.limit(pid)
        for round_number in range(args.rounds):
            order = (1, 2) if round_number % 2 == 0 else (2, 1)
            for count in order:
                agent = agents[count]
                url = f"dubbo://127.0.0.1:{agent.listener_port()}?connections=2"
                accepted = accepted_by_worker(agent)
                before = agent_cpu_us(agent.pid)
                summary = run_bench(url=url, threads=args.threads, duration_s=args.duration)
                spent = agent_cpu_us(agent.pid) - before
                calls = float(summary["calls"])
                rates[count].append(float(summary["calls_per_s"]))
                cpu[count].append(spent / calls if calls else float("nan"))
                if count == 2:
                    after = accepted_by_worker(agent)
                    placements.append(
                        "+".join(
                            f"{after[w] - accepted.get(w, 0.0):.0f}"
                            for w in sorted(after)
                            if w != "supervisor"
                        )
                    )
    finally:
        for agent in agents.values():
            agent.stop()
        provider.stop()
        if quotas:
            quotas.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    limit = f", each serving process limited to {args.cpu_per_worker} CPU" if quotas else ""
    print(
        f"\nDubbo listener, {args.threads} consumer threads, {args.rounds} rounds of "
        f"{args.duration:.0f} s{limit}, medians"
    )
    for count in (1, 2):
        print(
            f"  workers={count}: {med(rates[count]):.0f} calls/s, agent CPU "
            f"{med(cpu[count]):.1f} us per call (whole consumer run)"
        )
    ratios = [b / a for a, b in zip(rates[1], rates[2], strict=True)]
    print(
        f"  2 workers / 1 = {med(ratios):.2f}x calls/s (target >= {TARGET_SCALING}x); "
        "per round: " + ", ".join(f"{r:.2f}" for r in ratios)
    )
    print("  connections per worker (worker 0 + worker 1), per round: " + ", ".join(placements))
    split = [r for r, p in zip(ratios, placements, strict=True) if "0" not in p.split("+")]
    if split:
        print(f"  rounds with one connection on each worker: {med(split):.2f}x ({len(split)})")
    return 0


def worker_restart_ms(agent: AgentProcess) -> float:
    """SIGKILL worker 0; milliseconds until the supervisor reports its successor serving."""

    def serving() -> dict[int, int]:
        with agent.client() as client:
            workers = client.get("/readyz").json()["workers"]
        return {w["id"]: w["pid"] for w in workers if w["serving"]}

    old = serving()[0]
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while serving().get(0) in (None, old):
        time.sleep(0.002)  # polling the API for the measurement, not synchronising a test
    return (time.monotonic() - started) * 1000


def report(
    targets: list[Target],
    idle_us: float,
    floor_us: float,
    restart_ms: float,
    args: argparse.Namespace,
) -> None:
    one, two = targets
    placement = (
        f"each serving process limited to {args.cpu_per_worker} CPU, wrk -t1 and nginx unpinned"
        if args.cpu_per_worker
        else "wrk -t1 and nginx pinned to CPU 0"
    )
    print(
        f"\n{args.rounds} rounds, {args.duration:.0f} s per run, {args.connections} connections, "
        f"{placement}; medians"
    )
    print(f"{'':18}{'req/s':>10}{'p50 us':>9}{'p99 us':>9}{'CPU us/req':>12}{'p50 c1 us':>11}")
    for kind in ("tcp", "http"):
        for target in targets:
            print(
                f"{kind + ' ' + target.name:18}{med(target.rps[kind]):>10.0f}"
                f"{med(target.p50[kind]):>9.0f}{med(target.p99[kind]):>9.0f}"
                f"{med(target.cpu[kind]):>12.1f}{med(target.low_p50[kind]):>11.0f}"
            )
        ratios = [b / a for a, b in zip(one.rps[kind], two.rps[kind], strict=True)]
        print(
            f"  {kind}: 2 workers / 1 = {med(ratios):.2f}x requests/s "
            f"(target >= {TARGET_SCALING}x); per round: " + ", ".join(f"{r:.2f}" for r in ratios)
        )
    print("\nmemory (kB): process, RSS, PSS, private")
    for target in targets:
        for pid in descendants(target.agent.pid):
            mem = memory_kb(pid)
            print(f"  {target.name} pid {pid}: {mem['rss']}, {mem['pss']}, {mem['private']}")
    workers = descendants(two.agent.pid)[2:]
    private = [memory_kb(pid)["private"] / 1024 for pid in workers]
    print(
        f"  private memory per worker: {', '.join(f'{p:.1f}' for p in private)} MB "
        f"(target <= {TARGET_WORKER_MB:.0f} MB)"
    )
    print(
        f"supervisor idle: {idle_us:.0f} us CPU per second (target <= "
        f"{TARGET_SUPERVISOR_IDLE_US:.0f}); a bare uvloop process with the same timer: "
        f"{floor_us:.0f} us/s"
    )
    print(f"worker SIGKILLed -> its successor serving: {restart_ms:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
