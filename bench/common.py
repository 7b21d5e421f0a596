"""Pieces every benchmark needs: a proxy's CPU time, and HAProxy in TCP mode as the baseline."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from tests.fixtures.processes import ManagedProcess, free_port


def cpu_us(pid: int) -> float:
    """On-CPU time of all the process's threads, in microseconds.

    From /proc/PID/task/*/schedstat (nanoseconds): /proc/PID/stat's utime+stime count 10 ms
    ticks, too coarse for per-call figures over a few seconds.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # thread exited
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1000


def start_haproxy_tcp(
    tmp: Path, upstream: int, name: str = "haproxy"
) -> tuple[ManagedProcess, int]:
    """HAProxy relaying TCP to 127.0.0.1:``upstream`` with one thread, as the issues ask."""
    port = free_port()
    conf = tmp / f"{name}.cfg"
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
    default_backend upstream
backend upstream
    balance roundrobin
    server provider 127.0.0.1:{upstream} check inter 5s
"""
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = ManagedProcess(
        [haproxy, "-db", "-f", str(conf)], name=name, log_path=tmp / f"{name}.log"
    )
    process.start()
    process.wait_for_port(port, 10)
    return process, port
