"""Soak: the agent under steady traffic and registry churn for a long while (issue 25);
its RSS and open descriptors sampled throughout, to show they stay flat.

The agent relays TCP to three upstream processes (tests/fixtures/upstreams.py). Meanwhile,
in threads: clients open a connection, exchange a line and close, back to back; the app
registers and deregisters instances of a second service through the API every 50 ms
(registry churn: every change is a discovery update to the agent's clusters); a prober
asks /healthz and /readyz and scrapes /metrics every 100 ms. Every RSS and descriptor
sample is printed, then the first, last and largest, and the errors of each kind.

    .venv/bin/python bench/soak.py --duration 1200      # 20 minutes (not in CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.agent_process import (
    APP_SERVICE,
    AgentProcess,
    start_agent,
    tcp_agent_config,
)
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.upstreams import exchange, start_upstreams


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _count(self, what: str, error: BaseException | None = None) -> None:
        with self.lock:
            if error is None:
                self.done[what] += 1
            else:
                self.errors[f"{what}: {type(error).__name__}"] += 1

    def traffic(self) -> None:
        port = self.agent.listener_port()
        while not self.stop.is_set():
            try:
                exchange(port, b"soak")
                self._count("tcp exchange")
            except (OSError, EOFError) as exc:
                self._count("tcp exchange", exc)

    def churn(self) -> None:
        with self.agent.client() as api:
            n = 0
            while not self.stop.is_set():
                instance = f"soak-{n % 20}"
                url = f"/v1/registrations/{APP_SERVICE}/{instance}"
                try:
                    if n % 40 < 20:
                        api.put(
                            url, json={"host": LOOPBACK, "port": free_port()}
                        ).raise_for_status()
                    else:
                        api.delete(url)
                    self._count("registration change")
                except Exception as exc:
                    self._count("registration change", exc)
                n += 1
                self.stop.wait(0.05)

    def probes(self) -> None:
        with self.agent.client() as api:
            while not self.stop.is_set():
                for path in ("/healthz", "/readyz", "/metrics"):
                    try:
                        api.get(path).raise_for_status()
                        self._count("probe")
                    except Exception as exc:
                        self._count("probe", exc)
                self.stop.wait(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds")
    parser.add_argument("--clients", type=int, default=4, help="TCP client threads")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    upstreams = start_upstreams(["u0", "u1", "u2"], tmp / "upstreams")
    agent = start_agent(
        tmp / "agent", tcp_agent_config([u.port for u in upstreams], extra_services=(APP_SERVICE,))
    )
    soak = Soak(agent)
    workers = [threading.Thread(target=soak.traffic) for _ in range(args.clients)]
    workers += [threading.Thread(target=soak.churn), threading.Thread(target=soak.probes)]
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        while (elapsed := time.monotonic() - started) < args.duration:
            samples.append((elapsed, rss_mb(agent.pid), open_fds(agent.pid)))
            print(
                f"{elapsed:7.0f} s  RSS {samples[-1][1]:6.1f} MB  fds {samples[-1][2]}", flush=True
            )
            time.sleep(min(args.sample, max(0.0, args.duration - elapsed)))
        samples.append((time.monotonic() - started, rss_mb(agent.pid), open_fds(agent.pid)))
    finally:
        soak.stop.set()
        for worker in workers:
            worker.join(10)
        running = agent.process.running
        agent.stop()
        for upstream in upstreams:
            upstream.stop()

    first, last = samples[0], samples[-1]
    print(f"\nsoak of {last[0]:.0f} s, {args.clients} TCP clients, churn every 50 ms")
    peak = max(sample[1] for sample in samples)
    print(f"RSS  first {first[1]:.1f} MB, last {last[1]:.1f} MB, max {peak:.1f} MB")
    print(f"fds  first {first[2]}, last {last[2]}, max {max(s[2] for s in samples)}")
    for what, count in sorted(soak.done.items()):
        print(f"{what}: {count:,} done")
    for what, count in sorted(soak.errors.items()):
        print(f"error {what}: {count:,}")
    print(f"agent still running at the end: {running}")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
