"""How many CPUs this process may use: ``workers: auto`` (docs/workers.md).

The smallest of the CPUs in its affinity mask (``taskset``, a cpuset) and its cgroup's
CPU quota rounded up (a container limited to ``1500m`` gets 2), as the Go runtime's
GOMAXPROCS and .NET do. The quota is read for cgroup v2 (``cpu.max`` of the process's
cgroup and each parent: the tightest wins) and v1 (``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``). Reading is injected so the rules are tested without a cgroup.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

Read = Callable[[str], str | None]


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read(4096)
    except (OSError, UnicodeDecodeError):
        return None


def quota_cpus(read: Read = read_text) -> float | None:
    """The cgroup CPU quota in CPUs (1.5 for ``150000 100000``), None when unlimited."""
    limits: list[float] = []
    membership = read("/proc/self/cgroup") or ""
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            # cgroup v2: the process's cgroup and every parent up to the root.
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts), -1, -1):
                prefix = "/".join(parts[:depth])
                text = read(f"/sys/fs/cgroup/{prefix}/cpu.max".replace("//", "/"))
                found = _cpu_max(text)
                if found is not None:
                    limits.append(found)
        elif "cpu" in controllers.split(","):
            base = (
                "/sys/fs/cgroup/cpu,cpuacct" if "cpuacct" in controllers else "/sys/fs/cgroup/cpu"
            )
            for directory in (f"{base}{path}".rstrip("/"), base):
                quota = _integer(read(f"{directory}/cpu.cfs_quota_us"))
                period = _integer(read(f"{directory}/cpu.cfs_period_us"))
                if quota is not None and period and quota > 0:
                    limits.append(quota / period)
                    break
    return min(limits) if limits else None


def _cpu_max(text: str | None) -> float | None:
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = _integer(fields[0]), _integer(fields[1])
    if quota is None or not period or quota <= 0:
        return None
    return quota / period


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.lstrip("-").isascii() or not text.lstrip("-").isdigit():
        return None
    return int(text)


def available_cpus(read: Read = read_text, affinity: Callable[[], int] | None = None) -> int:
    """CPUs this process may run on: affinity, then the quota rounded up; at least 1."""
    count = affinity() if affinity is not None else len(os.sched_getaffinity(0))
    quota = quota_cpus(read)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)
