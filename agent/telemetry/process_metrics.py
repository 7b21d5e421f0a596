"""The standard process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``, ``process_max_fds``, ``process_start_time_seconds``), read from /proc at
scrape time, as Prometheus client libraries name them: the agent dashboard's CPU, memory and
file descriptors (issue 28). Where /proc is not there (not Linux), nothing is exported.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

from agent.telemetry.exposition import CounterMetricFamily, GaugeMetricFamily, Metric

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()


def _boot_time() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


class ProcessMetrics:
    def __init__(self, proc: str = "/proc/self") -> None:
        self.proc = proc
        self._boot = _boot_time()

    def collect(self) -> Iterator[Metric]:
        try:
            with open(f"{self.proc}/stat", encoding="ascii") as stat:
                # Fields after the command (which may hold spaces) in parentheses.
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"{self.proc}/statm", encoding="ascii") as statm:
                resident_pages = int(statm.read().split()[1])
            open_fds = len(os.listdir(f"{self.proc}/fd"))
        except (OSError, IndexError, ValueError):
            return
        utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "CPU time of the agent process, user and system"
        )
        cpu.add_metric([], (utime + stime) / _TICKS)
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the agent process"
        )
        rss.add_metric([], resident_pages * _PAGE)
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors")
        fds.add_metric([], open_fds)
        limit = GaugeMetricFamily("process_max_fds", "The open-file limit (soft)")
        limit.add_metric([], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        started = GaugeMetricFamily(
            "process_start_time_seconds", "When the process started (Unix time)"
        )
        started.add_metric([], self._boot + starttime / _TICKS)
        yield from (cpu, rss, fds, limit, started)
