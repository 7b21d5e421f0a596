"""HTTP listener benchmark: wrk (HTTP/1.1) and h2load (HTTP/2) -> {nginx direct, meshagent
http listener, HAProxy in HTTP mode} -> two nginx endpoints.

    /work/main/.venv/bin/python bench/http_proxy.py [--rounds N --duration S --connections C]

Everything runs on 127.0.0.1 and is started (and stopped) here: one nginx (one worker)
listening on two ports, the two endpoints, each answering ``GET /`` with 2 bytes, plus two
HTTP/2 cleartext ports (the direct h2 run, the h2h2 endpoints); one meshagent process
from this checkout (an http listener, round_robin per request over both endpoints,
pooled keep-alive upstreams, no health checks); one HAProxy (``nbthread 1``, ``mode
http``, roundrobin, ``http-reuse always``, h2 prior knowledge on a second bind).
"direct" is nginx's first port (one endpoint, no balancing). Each round runs every
(client, target) pair once, the order rotated every round; figures are medians over
rounds, ratios medians of per-round ratios.

CPU per request: the proxy process's utime+stime (/proc/PID/stat) over the client's run
divided by the requests the client completed.

Clients: ``wrk`` (HTTP/1.1 both sides), ``h2load`` (HTTP/2 clients, the HTTP/1.1
endpoints), ``h2h2`` (HTTP/2 on both sides: h2load to the agent's second listener, whose
service says ``upstream_protocol: h2``, and to HAProxy's third frontend, ``proto h2``
servers; both to two nginx HTTP/2 cleartext ports); ``--clients wrk`` runs one of them.

``--baseline DIR`` adds another checkout's agent (``git archive REV | tar -x -C DIR``) as the
target "agent@base", in the same rounds, for before/after under the same noise (not for
h2h2).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder is sys.path[0], where this file would shadow the
# standard library's ``http`` package (httpx imports it): the repository root replaces it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from tests.fixtures.agent_process import start_agent  # noqa: E402
from tests.fixtures.processes import ManagedProcess, free_port  # noqa: E402

# Targets by client: agent requests/s over HAProxy's, and agent CPU per request.
TARGETS = {
    "wrk": (0.6, 40.0),  # issue 20
    "h2load": (0.4, 60.0),  # issue 22: HTTP/2 clients, HTTP/1.1 providers
    "h2h2": (0.4, 60.0),  # issue 22: HTTP/2 on both sides
}


@dataclass
class Run:
    client: str
    target: str
    port: int
    pid: int | None = None
    rate: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)


def start_nginx(tmp: Path) -> tuple[ManagedProcess, list[int], list[int]]:
    ports = [free_port(), free_port()]
    h2_port, h2_second = free_port(), free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{ports[0]};
        listen 127.0.0.1:{ports[1]};
        listen 127.0.0.1:{h2_port} http2;
        listen 127.0.0.1:{h2_second} http2;
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}
}}
""",
        encoding="utf-8",
    )
    process = ManagedProcess(
        ["nginx", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")],
        name="nginx",
        log_path=tmp / "nginx.log",
    )
    process.start()
    for port in (*ports, h2_port, h2_second):
        process.wait_for_port(port, 10)
    return process, ports, [h2_port, h2_second]


def start_haproxy(
    tmp: Path, upstreams: list[int], h2_upstreams: list[int]
) -> tuple[ManagedProcess, int, int, int]:
    port, h2_port, h2h2_port = free_port(), free_port(), free_port()
    servers = "\n".join(f"    server e{i} 127.0.0.1:{p}" for i, p in enumerate(upstreams))
    h2_servers = "\n".join(
        f"    server e{i} 127.0.0.1:{p} proto h2" for i, p in enumerate(h2_upstreams)
    )
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend web
    bind 127.0.0.1:{port}
    bind 127.0.0.1:{h2_port} proto h2
    default_backend endpoints
frontend h2h2
    bind 127.0.0.1:{h2h2_port} proto h2
    default_backend h2_endpoints
backend endpoints
    balance roundrobin
{servers}
backend h2_endpoints
    balance roundrobin
{h2_servers}
"""
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = ManagedProcess(
        [haproxy, "-db", "-f", str(conf)], name="haproxy", log_path=tmp / "haproxy.log"
    )
    process.start()
    process.wait_for_port(port, 10)
    return process, port, h2_port, h2h2_port


def agent_config(upstreams: list[int], h2_upstreams: list[int] | None = None) -> dict[str, Any]:
    """One listener to the HTTP/1.1 endpoints; with ``h2_upstreams``, a second one to
    those, spoken to in HTTP/2 (``upstream_protocol: h2``)."""
    services: dict[str, Any] = {"web": [{"host": "127.0.0.1", "port": p} for p in upstreams]}
    service = {"protocol": "http", "lb": {"policy": "round_robin"}, "health": {"enabled": False}}
    definitions = [{"name": "web", **service}]
    listeners = [{"port": free_port(), "service": "web", "protocol": "http"}]
    if h2_upstreams:
        services["web-h2"] = [{"host": "127.0.0.1", "port": p} for p in h2_upstreams]
        definitions.append({"name": "web-h2", **service, "options": {"upstream_protocol": "h2"}})
        listeners.append({"port": free_port(), "service": "web-h2", "protocol": "http"})
    return {
        "registries": [{"name": "local", "type": "local", "config": {"services": services}}],
        "services": definitions,
        "listeners": listeners,
        "log_level": "WARNING",
        "drain_timeout_s": 1,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(
    port: int, duration: float, connections: int, cpu: int | None = None
) -> dict[str, float]:
    """``cpu``: pin wrk to that CPU (taskset), as bench/workers.py does."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    out = subprocess.run(
        [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(duration)}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))

    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return _ms(number, unit)

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: .*", out)
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": ms(latency["50"]),
        "p99": ms(latency["99"]),
        "requests": requests,
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0))) if socket_errors else 0),
    }


def run_h2load(port: int, duration: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "h2load",
            "-D",
            str(int(duration)),
            "-c",
            str(connections),
            "-m",
            "10",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    # h2load prints min/max/mean/sd, no percentiles: p50 is the mean here, p99 the max.
    time = re.search(
        r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out
    )
    assert done and rate and time, out
    return {
        "rate": float(rate.group(1)),
        "p50": _ms(time.group(5), time.group(6)),
        "p99": _ms(time.group(3), time.group(4)),
        "requests": int(done.group(2)),
        "errors": int(done.group(3)),
    }


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\n{args.rounds} rounds x {args.duration:g} s, {args.connections} connections\n")
    print("| client | target | requests/s | p50 | p99 | errors | CPU per request |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        cpu = f"{med(run.cpu_us_per_request):.1f} us" if run.cpu_us_per_request else "-"
        print(
            f"| {run.client} | {run.target} | {med(run.rate):,.0f} "
            f"[{min(run.rate):,.0f}..{max(run.rate):,.0f}] | {med(run.p50_ms):.2f} ms "
            f"| {med(run.p99_ms):.2f} ms | {sum(run.errors)} | {cpu} |"
        )
    for client in args.clients.split(","):
        by_target = {r.target: r for r in runs if r.client == client}
        agent, haproxy = by_target["agent"], by_target["haproxy"]
        target_ratio, target_cpu_us = TARGETS[client]
        ratios = [a / h for a, h in zip(agent.rate, haproxy.rate, strict=True)]
        verdict = "met" if med(ratios) >= target_ratio else "NOT met"
        print(
            f"\n{client}: agent/HAProxy requests/s {med(ratios):.2f}x "
            f"(target >= {target_ratio}x: {verdict})"
        )
        if agent.cpu_us_per_request:
            cpu_us_agent = med(agent.cpu_us_per_request)
            cpu_verdict = "met" if cpu_us_agent <= target_cpu_us else "NOT met"
            print(
                f"{client}: agent CPU per request {cpu_us_agent:.1f} us "
                f"(target <= {target_cpu_us:.0f} us: {cpu_verdict})"
            )
        for other in ("direct", "agent@base"):
            if other in by_target:
                rates = [a / o for a, o in zip(agent.rate, by_target[other].rate, strict=True)]
                print(f"{client}: agent/{other} requests/s {med(rates):.2f}x")
        base = by_target.get("agent@base")
        if base is not None:
            cpu_ratios = [
                a / b
                for a, b in zip(agent.cpu_us_per_request, base.cpu_us_per_request, strict=True)
            ]
            print(f"{client}: agent/agent@base CPU per request {med(cpu_ratios):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--clients", default="wrk,h2load,h2h2")
    args = parser.parse_args(argv)
    for tool in ("wrk", "h2load", "nginx"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian: wrk, nghttp2-client, nginx)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    nginx, upstreams, nginx_h2 = start_nginx(tmp)
    stop: list[ManagedProcess] = [nginx]
    try:
        haproxy, haproxy_port, haproxy_h2, haproxy_h2h2 = start_haproxy(tmp, upstreams, nginx_h2)
        stop.append(haproxy)
        agent = start_agent(tmp, agent_config(upstreams, nginx_h2))
        stop.append(agent.process)
        agent.wait_endpoints("web", 2)
        agent.wait_endpoints("web-h2", 2)
        port = agent.listener_port()
        clients = args.clients.split(",")
        runs = []
        if "wrk" in clients:
            runs += [
                Run("wrk", "direct", upstreams[0]),
                Run("wrk", "agent", port, agent.pid),
                Run("wrk", "haproxy", haproxy_port, haproxy.pid),
            ]
        if "h2load" in clients:
            runs += [
                Run("h2load", "direct", nginx_h2[0]),
                Run("h2load", "agent", port, agent.pid),
                Run("h2load", "haproxy", haproxy_h2, haproxy.pid),
            ]
        if "h2h2" in clients:
            runs += [
                Run("h2h2", "direct", nginx_h2[0]),
                Run("h2h2", "agent", agent.listener_port(1), agent.pid),
                Run("h2h2", "haproxy", haproxy_h2h2, haproxy.pid),
            ]
        if args.baseline is not None:
            base = start_agent(tmp / "base", agent_config(upstreams), root=args.baseline.resolve())
            stop.append(base.process)
            base.wait_endpoints("web", 2)
            # (h2h2 has no baseline: an agent before upstream_protocol cannot be one.)
            runs += [
                Run(client, "agent@base", base.listener_port(), base.pid)
                for client in clients
                if client != "h2h2"
            ]
        for round_no in range(args.rounds):
            shift = round_no % len(runs)
            for run in runs[shift:] + runs[:shift]:
                before = cpu_us(run.pid) if run.pid else 0.0
                client = run_wrk if run.client == "wrk" else run_h2load  # h2load, h2h2
                result = client(run.port, args.duration, args.connections)
                run.rate.append(result["rate"])
                run.p50_ms.append(result["p50"])
                run.p99_ms.append(result["p99"])
                run.errors.append(int(result["errors"]))
                if run.pid is not None:
                    spent = cpu_us(run.pid) - before
                    run.cpu_us_per_request.append(spent / max(1.0, result["requests"]))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        report(runs, args)
    finally:
        for process in reversed(stop):
            process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
