"""TCP relay benchmark: wrk -> {nginx direct, meshagent tcp listener, HAProxy tcp} -> nginx.

    /work/main/.venv/bin/python bench/tcp.py [--rounds N --duration S --connections C]

Everything runs on 127.0.0.1 and is started (and stopped) by this script: one nginx
(1 worker, tiny static response, no access log), one meshagent process from this checkout
(embedded ``local`` registry, round_robin, TCP health checks and outlier detection on,
/metrics checked), one HAProxy in TCP mode with ``nbthread 1``. The targets are measured
interleaved, round by round, with the order rotated each round, so a noisy neighbour hits
all of them alike; the figures printed are medians over the rounds, and the ratios are
medians of the per-round ratios (each round's agent run against the same round's HAProxy
run).

Per target: requests/s and p50/p99 under load (``--connections``), the proxy process's CPU
time per request (utime+stime from /proc/PID/stat over the wrk run), the latency added per
hop at low load (wrk -c1 -t1: proxy p50 minus direct p50 of the same round), and the
agent's VmRSS after the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = "ok\n"

# The targets the TCP relay is held to (docs/benchmarks.md).
TARGET_RPS_RATIO = 0.9  # agent >= 0.9x HAProxy requests/s
TARGET_CPU_RATIO = 1.05  # agent <= 1.05x HAProxy CPU per request (issue 20)
TARGET_ADDED_P50_US = 60.0  # <= +60 us p50 per hop at low load
TARGET_RSS_MB = 45.0  # RSS with only the core loaded


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {port} within {timeout}s")


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status), bytes(response.read())


def wait_http(what: str, port: int, timeout: float = 10) -> None:
    """Until a GET through ``port`` returns nginx's body (a proxy may still be checking)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_get(port)
            if status == 200 and body == BODY.encode():
                return
            problem = f"answered {status} {body!r}"
        except OSError as exc:
            problem = f"failed: {exc}"
        if time.monotonic() > deadline:
            raise BenchError(f"GET through {what} (port {port}) {problem}")
        time.sleep(0.1)


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of a process, all its threads."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


class Processes:
    """Every process this script starts, stopped in reverse order however we leave."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        # Own session: a Ctrl-C at the terminal reaches only us, and we stop them in order.
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.procs.append((name, proc))
        return proc  # type: ignore[no-any-return]

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + 5
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self.procs.clear()


# -- the three servers ------------------------------------------------------------------


def start_nginx(procs: Processes, tmp: Path) -> tuple[int, int]:
    port = free_port()
    prefix = tmp / "nginx"
    for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    # master_process off: the one worker is the process we start, so its CPU is ours to read.
    # keepalive_requests is raised so wrk's connections stay up for the whole run and the
    # figures are the relay's, not connection setup's.
    conf.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            default_type text/plain;
            return 200 "{BODY.strip()}\\n";
        }}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = procs.start(
        "nginx",
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs/error.log")],
        stdout=subprocess.DEVNULL,
        stderr=open(prefix / "logs/stderr.log", "wb"),  # noqa: SIM115
    )
    wait_port(port, proc, "nginx", prefix / "logs/stderr.log")
    return port, proc.pid


def start_haproxy(procs: Processes, tmp: Path, upstream: int) -> tuple[int, int]:
    port = free_port()
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend relay
    bind 127.0.0.1:{port}
    default_backend nginx
backend nginx
    balance roundrobin
    server nginx 127.0.0.1:{upstream} check inter 5s
"""
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    proc = procs.start(
        "haproxy",
        [haproxy, "-db", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "haproxy.log", "wb"),  # noqa: SIM115
    )
    wait_port(port, proc, "haproxy", tmp / "haproxy.log")
    return port, proc.pid


def start_agent(
    procs: Processes, tmp: Path, upstream: int, root: Path = ROOT, tag: str = "agent"
) -> tuple[int, int, int]:
    port, admin = free_port(), free_port()
    conf = tmp / f"{tag}.yaml"
    conf.write_text(
        f"""
admin:
  host: 127.0.0.1
  port: {admin}
registries:
  - name: local
    type: local
    config:
      services:
        nginx:
          - host: 127.0.0.1
            port: {upstream}
services:
  - name: nginx
    registry: local
    protocol: tcp
    lb:
      policy: round_robin
    health:
      enabled: true
      checker: tcp
      interval_s: 5
      timeout_s: 1
    outlier:
      enabled: true
listeners:
  - name: bench
    host: 127.0.0.1
    port: {port}
    service: nginx
    protocol: tcp
drain_timeout_s: 1
"""
    )
    out, err = tmp / f"{tag}.out", tmp / f"{tag}.err"
    proc = procs.start(
        "meshagent",
        [sys.executable, "-m", "agent.cli", "run", "-c", str(conf)],
        cwd=root,  # so that this checkout's ``agent`` package is the one imported
        stdout=open(out, "wb"),  # noqa: SIM115
        stderr=open(err, "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 30
    while b"meshagent ready" not in out.read_bytes():
        if proc.poll() is not None:
            raise BenchError(
                f"meshagent exited with {proc.returncode}:\n"
                + err.read_text(errors="replace")[-2000:]
            )
        if time.monotonic() > deadline:
            raise BenchError("meshagent did not report ready within 30s")
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    while True:
        try:
            status, _ = http_get(admin, "/readyz")
        except OSError:
            status = 0
        if status == 200:
            break
        if time.monotonic() > deadline:
            raise BenchError("meshagent /readyz did not turn 200 within 15s")
        time.sleep(0.1)
    status, metrics = http_get(admin, "/metrics")
    if status != 200 or not metrics:
        raise BenchError(f"meshagent /metrics answered {status}")
    return port, admin, proc.pid


# -- wrk --------------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


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


def run_wrk(
    procs: Processes, port: int, threads: int, connections: int, duration: int
) -> WrkResult:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    proc = procs.start("wrk", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        procs.procs = [(n, p) for n, p in procs.procs if p is not proc]
    text = out.decode(errors="replace")
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


# -- the run ----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    proxy_pid: int | None  # the process whose CPU is charged to the hop (None: direct)
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # proxy CPU per request
    user_us: list[float] = field(default_factory=list)  # its user-space part
    upstream_cpu_us: list[float] = field(default_factory=list)  # nginx CPU per request
    low_p50: list[float] = field(default_factory=list)
    low_p99: list[float] = field(default_factory=list)
    errors: int = 0


def measure(
    procs: Processes,
    target: Target,
    nginx_pid: int,
    threads: int,
    connections: int,
    duration: int,
) -> None:
    pids = [p for p in (target.proxy_pid, nginx_pid) if p is not None]
    before = {pid: cpu_ticks(pid) for pid in pids}
    result = run_wrk(procs, target.port, threads, connections, duration)
    after = {pid: cpu_ticks(pid) for pid in pids}
    scale = 1e6 / CLK_TCK / max(1, result.requests)
    per_request = {pid: (sum(after[pid]) - sum(before[pid])) * scale for pid in pids}
    target.rps.append(result.rps)
    target.p50.append(result.p50_us)
    target.p99.append(result.p99_us)
    target.upstream_cpu_us.append(per_request[nginx_pid])
    if target.proxy_pid is not None:
        target.cpu_us.append(per_request[target.proxy_pid])
        user = after[target.proxy_pid][0] - before[target.proxy_pid][0]
        target.user_us.append(user * scale)
    target.errors += result.errors


def rotated(items: list[Target], by: int) -> Iterator[Target]:
    for i in range(len(items)):
        yield items[(i + by) % len(items)]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c under load")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t under load")
    parser.add_argument(
        "--low-duration", type=int, default=None, help="seconds per -c1 run (default: --duration)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="root of another checkout (e.g. `git archive REV | tar -x -C DIR`), measured "
        "as a fourth target 'agent@base' in the same rounds: before/after under the same noise",
    )
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk per target first")
    args = parser.parse_args(argv)
    low_duration = args.low_duration or args.duration
    if args.rounds < 3:
        print(
            f"bench/tcp.py: {args.rounds} round(s): the figures are single runs, not medians; "
            "use --rounds 5 or more to report them",
            file=sys.stderr,
        )
    for tool in ("wrk", "nginx", "haproxy"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"bench/tcp.py: {tool} not found (apt-get install -y {tool})", file=sys.stderr)
            return 2

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below always runs. SIGINT is set
    # too: a shell starting us in the background leaves it ignored, and Python then keeps it so.
    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)

    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="meshagent-bench-"))
    try:
        agent_file = subprocess.run(
            [sys.executable, "-c", "import agent; print(agent.__file__)"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        nginx_port, nginx_pid = start_nginx(procs, tmp)
        wait_http("nginx", nginx_port)
        agent_port, admin_port, agent_pid = start_agent(procs, tmp, nginx_port)
        haproxy_port, haproxy_pid = start_haproxy(procs, tmp, nginx_port)
        targets = [
            Target("direct", nginx_port, None),
            Target("meshagent", agent_port, agent_pid),
            Target("haproxy", haproxy_port, haproxy_pid),
        ]
        if args.baseline is not None:
            base_port, _, base_pid = start_agent(
                procs, tmp, nginx_port, args.baseline.resolve(), "baseline"
            )
            targets.append(Target("agent@base", base_port, base_pid))
        for target in targets:
            wait_http(target.name, target.port)
        print(f"meshagent {agent_file} (pid {agent_pid}), admin :{admin_port}")
        print(
            f"{os.cpu_count()} cpus, loadavg {os.getloadavg()[0]:.2f}; "
            f"{args.rounds} rounds x {args.duration:g}s, wrk -t{args.threads} "
            f"-c{args.connections}; low load wrk -t1 -c1 x {low_duration:g}s",
            flush=True,
        )
        rss_start_kb = status_kb(agent_pid, "VmRSS")
        if args.warmup > 0:
            for target in targets:
                run_wrk(procs, target.port, args.threads, args.connections, args.warmup)
        for round_no in range(args.rounds):
            for target in rotated(targets, round_no):
                measure(procs, target, nginx_pid, args.threads, args.connections, args.duration)
            for target in rotated(targets, round_no):
                low = run_wrk(procs, target.port, 1, 1, low_duration)
                target.low_p50.append(low.p50_us)
                target.low_p99.append(low.p99_us)
                target.errors += low.errors
            line = "  ".join(
                f"{t.name} {t.rps[-1]:,.0f} rps p50 {t.p50[-1]:.0f}us lowp50 {t.low_p50[-1]:.0f}us"
                + (f" cpu {t.cpu_us[-1]:.1f}us/req" if t.cpu_us else "")
                for t in targets
            )
            print(f"round {round_no + 1}/{args.rounds}: {line}", flush=True)
        rss_kb = status_kb(agent_pid, "VmRSS")
        hwm_kb = status_kb(agent_pid, "VmHWM")
        report(targets, rss_start_kb, rss_kb, hwm_kb)
        return 0 if all(t.errors == 0 for t in targets) else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench/tcp.py: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def report(targets: list[Target], rss_start_kb: int, rss_kb: int, hwm_kb: int) -> None:
    direct, agent, haproxy = targets[:3]

    def cell(values: list[float], fmt: str = "{:,.0f}") -> str:
        if not values:
            return "-"
        text = fmt.format(med(values))
        if len(values) > 1:
            text += f" [{fmt.format(min(values))}..{fmt.format(max(values))}]"
        return text

    def ratios(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    def added(t: Target) -> list[float]:
        return [p - d for p, d in zip(t.low_p50, direct.low_p50, strict=True)]

    rows = [
        [
            "target",
            "req/s",
            "p50 us",
            "p99 us",
            "proxy CPU us/req",
            "(user part)",
            "nginx CPU us/req",
            "low-load p50 us",
            "added p50 us/hop",
        ]
    ]
    for t in targets:
        rows.append(
            [
                t.name,
                cell(t.rps),
                cell(t.p50),
                cell(t.p99),
                cell(t.cpu_us, "{:.1f}"),
                cell(t.user_us, "{:.1f}"),
                cell(t.upstream_cpu_us, "{:.1f}"),
                cell(t.low_p50),
                "-" if t is direct else cell(added(t), "{:+.0f}"),
            ]
            + ([f"ERRORS {t.errors}"] if t.errors else [])
        )
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    print()
    print("medians over rounds [min..max]")
    for n, row in enumerate(rows):
        print(
            "  ".join(
                text.ljust(widths[i]) if i == 0 or i >= len(widths) else text.rjust(widths[i])
                for i, text in enumerate(row)
            )
        )
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))

    rps_ratio = ratios(agent.rps, haproxy.rps)
    cpu_ratio = ratios(agent.cpu_us, haproxy.cpu_us)
    agent_added, haproxy_added = added(agent), added(haproxy)
    rss_mb = rss_kb / 1024

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print()
    print("meshagent vs HAProxy (median of per-round ratios [min..max])")
    print(
        f"  requests/s       {cell(rps_ratio, '{:.2f}')}x   "
        f"target >= {TARGET_RPS_RATIO}x: {verdict(med(rps_ratio) >= TARGET_RPS_RATIO)}"
    )
    print(
        f"  CPU per request  {cell(cpu_ratio, '{:.2f}')}x   "
        f"target <= {TARGET_CPU_RATIO}x: {verdict(med(cpu_ratio) <= TARGET_CPU_RATIO)}"
    )
    print(
        f"  added p50/hop    {cell(agent_added, '{:+.0f}')} us (HAProxy "
        f"{cell(haproxy_added, '{:+.0f}')} us)   target <= +{TARGET_ADDED_P50_US:.0f} us: "
        f"{verdict(med(agent_added) <= TARGET_ADDED_P50_US)}"
    )
    print(
        f"  meshagent RSS    {rss_mb:.1f} MB after the runs (at start {rss_start_kb / 1024:.1f} MB,"
        f" peak {hwm_kb / 1024:.1f} MB)   target <= {TARGET_RSS_MB:.0f} MB: "
        f"{verdict(rss_mb <= TARGET_RSS_MB)}"
    )
    for base in targets[3:]:
        print()
        print(f"{base.name} (the --baseline checkout) in the same rounds")
        print(
            f"  vs HAProxy: requests/s {cell(ratios(base.rps, haproxy.rps), '{:.2f}')}x, "
            f"CPU per request {cell(ratios(base.cpu_us, haproxy.cpu_us), '{:.2f}')}x, "
            f"added p50/hop {cell(added(base), '{:+.0f}')} us"
        )
        print(
            f"  meshagent/{base.name}: requests/s {cell(ratios(agent.rps, base.rps), '{:.3f}')}x,"
            f" CPU per request {cell(ratios(agent.cpu_us, base.cpu_us), '{:.3f}')}x"
        )


if __name__ == "__main__":
    sys.exit(main())
