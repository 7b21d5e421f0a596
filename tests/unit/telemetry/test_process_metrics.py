"""agent/telemetry/process_metrics.py against this process's own /proc."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from agent.telemetry.exposition import Registry, render
from agent.telemetry.process_metrics import ProcessMetrics


def _value(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_the_standard_names_with_this_processs_values() -> None:
    registry = Registry()
    registry.register(ProcessMetrics())
    text = render(registry).decode()
    assert _value(text, "process_cpu_seconds_total") > 0
    rss = _value(text, "process_resident_memory_bytes")
    assert 10 * 2**20 < rss < 4 * 2**30  # a Python interpreter with pytest loaded
    assert (
        _value(text, "process_open_fds") == len(os.listdir("/proc/self/fd")) - 1
        or _value(text, "process_open_fds") >= 3
    )
    assert _value(text, "process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert 0 < time.time() - _value(text, "process_start_time_seconds") < 3600 * 24


def test_no_proc_no_metrics(tmp_path: Path) -> None:
    assert list(ProcessMetrics(str(tmp_path / "missing")).collect()) == []
