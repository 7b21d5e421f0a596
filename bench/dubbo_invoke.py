"""Dubbo generic invocation through the OpenAPI: wrk -> POST /v1/invoke/dubbo/{iface}/echo ->
meshagent -> the Java provider, against the Java consumer's own direct calls.

    /work/main/.venv/bin/python bench/dubbo_invoke.py [--rounds N --duration S --concurrency C]

Everything runs on 127.0.0.1 and is started (and stopped) here: one Java Dubbo 3.3 provider
(tests/interop/java/dubbo-peer, full JIT) and one meshagent process from this checkout (the
embedded ``local`` registry declares the provider; round_robin; health checks and outlier
detection on; no listener: only the admin API's invoke route is used).

Targets, per round, the order rotated every round, each at the same concurrency:

- ``java-stub``: the Java consumer's ``bench`` mode, C threads calling ``echo(16 bytes)``
  through the generated stub, straight to the provider (one shared connection);
- ``java-generic``: the same through ``GenericService.$invoke`` (what the agent sends);
- ``openapi``: ``wrk -t1 -cC`` POSTing ``{"types": ["java.lang.String"], "args": ["x"*16]}``
  to the agent's invoke route (HTTP/1.1 keep-alive; a Lua script sets method and body).

wrk's own warm-up run (``--warmup`` s) precedes each measured wrk run and is not counted; the
Java consumer warms up inside its JVM the same way. Then the same rotation once more at
concurrency 1 (one caller): the *added p50* (openapi p50 minus java-stub p50 of the same
round) at one caller is what the issue's target means (<= +300 us over a direct Java call).

Agent CPU per invocation: utime+stime of the agent (/proc/PID/stat) over the measured wrk run
divided by the requests wrk completed in it.

``--baseline DIR`` adds ``openapi-base``: an agent run from another checkout (a git worktree
of an earlier commit, with this virtualenv), measured in the same rotation, so a change is
judged against what it replaces on the same machine in the same minutes.

``--profile S`` afterwards measures the HTTP floor (GET /healthz, /readyz: agent CPU per
request, at 1 and at ``--concurrency`` connections) and samples the agent with py-spy for S
seconds under wrk at ``--profile-concurrency`` connections, printing where its time goes
(inclusive and self shares per function, and grouped by layer). The agent's RSS is printed
after start and after every run (tens of thousands of invocations).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.java_dubbo import (  # noqa: E402
    BENCH_JVM_ARGS,
    INTERFACE,
    build_peer,
    run_bench,
    start_provider,
)

# Issue 19's targets: generic invoke through the OpenAPI <= +250 us p50 over the direct stub
# at one caller; <= 150 us of agent CPU per call; >= 0.8x the stub's calls/s at 8 callers.
TARGET_ADDED_P50_US = 250.0
TARGET_CPU_US = 150.0
TARGET_RATE_RATIO = 0.8

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


class BenchError(RuntimeError):
    pass


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def agent_config(provider_port: int) -> dict[str, Any]:
    return {
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
        "drain_timeout_s": 1,
        "log_level": "WARNING",
    }


def invoke_body(payload: int) -> dict[str, Any]:
    return {"types": ["java.lang.String"], "args": ["x" * payload]}


def write_lua(tmp: Path, payload: int) -> Path:
    script = tmp / "invoke.lua"
    body = json.dumps(invoke_body(payload), separators=(",", ":"))
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


# -- wrk ------------------------------------------------------------------------------------


def _micros(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"cannot read latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_us: float
    p99_us: float
    errors: int


def run_wrk(url: str, script: Path | None, connections: int, duration: float) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    proc = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text}")
    try:
        requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
        p50 = _micros(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
        p99 = _micros(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    except AttributeError:
        raise BenchError(f"cannot parse wrk output:\n{text}") from None
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(g) for g in match.groups())
    return WrkResult(requests, rps, p50, p99, errors)


# -- the run --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    cpu_per_call: list[float] = field(default_factory=list)


def rotated(items: list[Target], by: int) -> Iterator[Target]:
    by %= len(items)
    yield from items[by:] + items[:by]


@dataclass
class Setup:
    provider_url: str
    agent: AgentProcess
    invoke_url: str
    script: Path
    args: argparse.Namespace
    baseline: AgentProcess | None = None

    def agent_for(self, target: str) -> tuple[AgentProcess, str]:
        if target == "openapi-base":
            assert self.baseline is not None
            return self.baseline, invoke_url(self.baseline)
        return self.agent, self.invoke_url


def invoke_url(agent: AgentProcess) -> str:
    return f"{agent.base_url}/v1/invoke/dubbo/{INTERFACE}/echo"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(setup: Setup, target: Target, concurrency: int) -> None:
    args = setup.args
    if target.name.startswith("openapi"):
        agent, url = setup.agent_for(target.name)
        run_wrk(url, setup.script, concurrency, args.warmup)
        before = cpu_us(agent.pid)
        result = run_wrk(url, setup.script, concurrency, args.duration)
        spent = cpu_us(agent.pid) - before
        target.rate.append(result.rps)
        target.p50.append(result.p50_us)
        target.p99.append(result.p99_us)
        target.errors.append(result.errors)
        target.cpu_per_call.append(spent / max(1, result.requests))
        return
    summary = run_bench(
        url=setup.provider_url,
        threads=concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        payload_bytes=args.payload,
        generic=target.name == "java-generic",
    )
    target.rate.append(float(summary["calls_per_s"]))
    target.p50.append(float(summary["p50_us"]))
    target.p99.append(float(summary["p99_us"]))
    target.errors.append(int(summary["errors"]))


def check_invoke(url: str, payload: int) -> None:
    body = invoke_body(payload)
    response = httpx.post(url, json=body, timeout=10)
    if response.status_code != 200 or response.json().get("result") != body["args"][0]:
        raise BenchError(f"invoke answered {response.status_code}: {response.text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8, help="callers under load")
    parser.add_argument("--payload", type=int, default=16)
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy seconds at the end")
    parser.add_argument("--profile-concurrency", type=int, default=1, help="wrk -c for py-spy")
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native (C frames of compiled code)"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout's agent as openapi-base"
    )
    parser.add_argument(
        "--baseline-pure",
        action="store_true",
        help="openapi-base is this tree interpreted (MESHAGENT_PURE_PYTHON=1)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found")

    build_peer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dubbo-invoke-"))
    provider = start_provider(tmp, jvm_args=BENCH_JVM_ARGS, provider_id="bench")
    agent: AgentProcess | None = None
    baseline: AgentProcess | None = None
    try:
        agent = start_agent(tmp, agent_config(provider.port))
        agent.wait_endpoints(INTERFACE, 1)
        if args.baseline is not None or args.baseline_pure:
            baseline = start_agent(
                tmp,
                agent_config(provider.port),
                name="baseline",
                root=(args.baseline or ROOT).resolve(),
                env={"MESHAGENT_PURE_PYTHON": "1"} if args.baseline_pure else None,
            )
            baseline.wait_endpoints(INTERFACE, 1)
        setup = Setup(
            provider_url=provider.url,
            agent=agent,
            invoke_url=invoke_url(agent),
            script=write_lua(tmp, args.payload),
            args=args,
            baseline=baseline,
        )
        check_invoke(setup.invoke_url, args.payload)
        started_rss = {name: rss_kb(a.pid) for name, a in _agents(setup).items()}
        passes: list[tuple[int, list[Target]]] = []
        for concurrency in dict.fromkeys((args.concurrency, 1)):
            targets = [Target("java-stub"), Target("java-generic"), Target("openapi")]
            if baseline is not None:
                targets.append(Target("openapi-base"))
            passes.append((concurrency, targets))
            for round_no in range(args.rounds):
                for target in rotated(targets, round_no):
                    measure(setup, target, concurrency)
                print(
                    f"c={concurrency}: round {round_no + 1}/{args.rounds} done",
                    file=sys.stderr,
                    flush=True,
                )
        for concurrency, targets in passes:
            report(concurrency, targets, args)
        print()
        for name, a in _agents(setup).items():
            print(
                f"RSS {name}: {started_rss[name] / 1024:.1f} MiB after start, "
                f"{rss_kb(a.pid) / 1024:.1f} MiB after every run"
            )
        if args.profile > 0:
            profile(setup, tmp)
    finally:
        for running in (agent, baseline):
            if running is not None:
                running.stop()
        provider.stop()
    return 0


def _agents(setup: Setup) -> dict[str, AgentProcess]:
    found = {"openapi": setup.agent}
    if setup.baseline is not None:
        found["openapi-base"] = setup.baseline
    return found


def report(concurrency: int, targets: list[Target], args: argparse.Namespace) -> None:
    stub, generic, openapi = targets[:3]
    base = targets[3] if len(targets) > 3 else None

    def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
        if not values:
            return "-"
        return f"{fmt.format(med(values))} [{fmt.format(min(values))}..{fmt.format(max(values))}]"

    print(
        f"\necho({args.payload} B), {concurrency} caller(s), {args.duration:g}s x "
        f"{args.rounds} rounds (medians [min..max])\n"
    )
    print(f"{'target':<13} {'calls/s':>24} {'p50 us':>22} {'p99 us':>24} {'err':>4} CPU us/call")
    for t in targets:
        cpu = spread(t.cpu_per_call, "{:.0f}")
        print(
            f"{t.name:<13} {spread(t.rate):>24} {spread(t.p50):>22} {spread(t.p99):>24} "
            f"{sum(t.errors):>4} {cpu}"
        )
    added = [o - s for o, s in zip(openapi.p50, stub.p50, strict=True)]
    added_generic = [o - g for o, g in zip(openapi.p50, generic.p50, strict=True)]
    rate_ratio = [o / s for o, s in zip(openapi.rate, stub.rate, strict=True)]
    verdict = "met" if med(added) <= TARGET_ADDED_P50_US else "NOT met"
    print()
    print(
        f"added p50, openapi - java-stub     {spread(added, '{:+,.0f}')} us"
        + (f"  (target <= +{TARGET_ADDED_P50_US:.0f} us: {verdict})" if concurrency == 1 else "")
    )
    print(f"added p50, openapi - java-generic  {spread(added_generic, '{:+,.0f}')} us")
    rate_verdict = "met" if med(rate_ratio) >= TARGET_RATE_RATIO else "NOT met"
    print(
        f"calls/s openapi / java-stub        {spread(rate_ratio, '{:.2f}')}x"
        + (f"  (target >= {TARGET_RATE_RATIO}x: {rate_verdict})" if concurrency > 1 else "")
    )
    cpu_verdict = "met" if med(openapi.cpu_per_call) <= TARGET_CPU_US else "NOT met"
    print(
        f"agent CPU per call                 {spread(openapi.cpu_per_call)} us"
        f"  (target <= {TARGET_CPU_US:.0f} us: {cpu_verdict})"
    )
    if base is not None:
        cpu_ratio = [o / b for o, b in zip(openapi.cpu_per_call, base.cpu_per_call, strict=True)]
        base_rate = [o / b for o, b in zip(openapi.rate, base.rate, strict=True)]
        print(
            f"openapi / openapi-base: CPU per call {spread(cpu_ratio, '{:.2f}')}x, "
            f"calls/s {spread(base_rate, '{:.2f}')}x"
        )


def profile(setup: Setup, tmp: Path) -> None:
    """The HTTP stack's floor (GET /healthz, CPU per request), then py-spy under wrk -c1:
    share of samples per function, inclusive and self, and grouped by layer."""
    seconds = setup.args.profile
    for name, agent in _agents(setup).items():
        for path in ("/healthz", "/readyz"):
            for connections in dict.fromkeys((1, setup.args.concurrency)):
                before = cpu_us(agent.pid)
                floor = run_wrk(f"{agent.base_url}{path}", None, connections, seconds)
                spent = cpu_us(agent.pid) - before
                print(
                    f"floor {name}: GET {path}, wrk -c{connections} {seconds:g}s: "
                    f"{floor.rps:,.0f} req/s, p50 {floor.p50_us:,.0f} us, "
                    f"agent CPU {spent / max(1, floor.requests):,.1f} us/req"
                )
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = tmp / "agent.pyspy.txt"
    argv = [py_spy, "record", "-p", str(setup.agent.pid), "-d", str(int(seconds)), "-r", "200"]
    if setup.args.profile_native:
        argv.append("--native")  # the compiled modules' C functions and libc's syscalls
    spy = subprocess.Popen(
        [*argv, "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_wrk(setup.invoke_url, setup.script, setup.args.profile_concurrency, seconds)
        spy.wait(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if not raw.exists():
        print("py-spy wrote nothing (ptrace not permitted?)")
        return
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(
        f"\npy-spy, wrk -c{setup.args.profile_concurrency} for {seconds:g}s, {total} samples"
        f" (raw: {raw})"
    )
    print("inclusive:")
    for frame, count in inclusive.most_common(40):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("self:")
    for frame, count in own.most_common(20):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("by layer:")
    for layer, count in layers(raw).most_common():
        print(f"  {100 * count / total:5.1f}%  {layer}")


def layers(raw: Path) -> collections.Counter[str]:
    """py-spy samples grouped by where the agent was (the leaf frame and its callers)."""
    out: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith("MultiplexConnection.write"):
            layer = "transport.write of the Dubbo request (syscall; preempted by the woken JVM)"
        elif leaf.startswith("ApiConnection._write"):
            layer = "transport.write of the HTTP response (syscall)"
        elif leaf.startswith("Runner.run"):
            layer = "event loop, native (uvloop: epoll, read, callback dispatch)"
        elif "Agent.invoke" in stack:
            if "hessian2" in stack:
                layer = "invoke: hessian2 encode/decode"
            elif "generic.py" in stack:
                layer = "invoke: JSON <-> Java values (generic.py)"
            else:
                layer = "invoke: the rest of the Dubbo plugin (strategies, invoker, upstream)"
        elif "fast_routes.py" in stack:
            layer = "API routes: body parse, reply JSON"
        elif "http1.py" in stack:
            layer = "API server: HTTP/1.1 parsing, queueing, reply framing"
        elif "upstream.py" in stack or "frame.py" in stack:
            layer = "Dubbo response: frame decode, settle the waiter"
        else:
            layer = "other"
        out[layer] += int(count_text)
    return out


if __name__ == "__main__":
    sys.exit(main())
