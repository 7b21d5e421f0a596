"""The supervisor of ``workers: N`` (docs/workers.md): one view of the mesh, N data planes.

The supervisor is the agent in ``Role.SUPERVISOR``: it keeps what must exist once
(registry sessions and watches, registrations and their TTLs, config sources and dynamic
rules, active health checks, the API) and streams each worker the state it needs over a
Unix socket: a snapshot when the worker connects, then every change in order (discovery
updates as Reset/Add/Remove, endpoint health and ejections, rule and settings versions).
Workers send back their passive outlier signals; the supervisor's own clusters count them
and decide ejections for all (Envoy's main-thread model), so a bad provider is ejected
once, not once per worker.

Faults: a worker that exits is forked again at once by the zygote (agent/runtime/zygote.py)
and the restart is logged and counted; one whose loop does not answer a ping within
``worker_watchdog_s`` is killed and replaced; a worker that cannot start stops the agent's
start-up as a single agent's bind error does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.cluster.cluster import Cluster
from agent.discovery.types import Reset, Update
from agent.errors import MeshAgentError
from agent.governance.rules import RuleSet
from agent.governance.shares import RuleShares
from agent.runtime.agent import Agent, MeshPublisher
from agent.runtime.heartbeat import Heartbeats
from agent.runtime.mesh_stream import (
    MAX_LINE,
    Message,
    StreamError,
    encode,
    failures_from_json,
    metrics_from_json,
    read_message,
    update_to_json,
)
from agent.runtime.settings import DynamicSettings
from agent.runtime.zygote import Zygote
from agent.telemetry.call_stats import samples_of
from agent.telemetry.exposition import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    Registry,
    render,
)
from agent.telemetry.metrics import metrics_registry
from agent.telemetry.recent_failures import FailedCall, RecentFailures
from agent.telemetry.worker_merge import merge

log = logging.getLogger(__name__)

# A worker must say hello and bind its listeners within this at start-up.
STARTUP_TIMEOUT_S = 60.0
# How long a scrape waits for the workers' metrics.
METRICS_TIMEOUT_S = 2.0


class WorkerStartError(MeshAgentError):
    """A worker could not start (its bind failed, or it exited before serving)."""


@dataclass
class WorkerProcess:
    id: int
    pid: int = 0
    started: float = 0.0
    writer: asyncio.StreamWriter | None = None
    listening: bool = False
    ready: bool = False
    why: list[str] = field(default_factory=list)
    # Restarts in a row that came soon after a start (a crash loop backs off).
    quick_exits: int = 0


class Supervisor(MeshPublisher):
    def __init__(
        self,
        agent: Agent,
        count: int,
        zygote: Zygote,
        socket_path: str,
        watchdog_s: float,
        heartbeats: Heartbeats,
    ) -> None:
        self.agent = agent
        self.heartbeats = heartbeats
        self.zygote = zygote
        self.socket_path = socket_path
        self.watchdog_s = watchdog_s
        self.workers = [WorkerProcess(i) for i in range(count)]
        self.restarts: dict[str, int] = {"exit": 0, "watchdog": 0}
        self.draining = False
        self.server: asyncio.AbstractServer | None = None
        self._rules: Message | None = None
        # Each worker's part of the limited rules, moved to where the calls are.
        self.shares = RuleShares(count)
        self._settings: Message | None = None
        self._sent: dict[str, dict[str, tuple[bool, float, bool]]] = {}
        self._dirty: set[str] = set()
        self._requests: dict[int, asyncio.Future[Message]] = {}
        self._next_request = 0
        self._startup: asyncio.Future[None] | None = None
        # The supervisor's own metrics (its registries, clusters, API calls) for the scrape.
        self.own = metrics_registry(agent)
        # The status page shows the failed calls of every process: the supervisor's own
        # go on being recorded where its metrics put them, the shown list is rebuilt.
        self._own_failures = agent.recent_failures
        agent.recent_failures = RecentFailures()
        self._worker_failures: dict[str, list[FailedCall]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._exited = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the stream, fork every worker, return once all serve (else raise)."""
        loop = asyncio.get_running_loop()
        self.agent.publisher = self
        self.agent.workers_not_ready = self.not_ready
        self.agent.describe_workers = self.describe
        self.agent.endpoint_stats = self.endpoint_stats
        for cluster in self.agent.clusters.values():
            cluster.listeners.append(self._cluster_changed)
            # What every worker will have: the snapshot gives it, changes are sent from here.
            self._sent[cluster.name] = cluster.host_states()
        self.server = await asyncio.start_unix_server(
            self._serve_worker, self.socket_path, limit=MAX_LINE
        )
        os.chmod(self.socket_path, 0o600)
        loop.add_reader(self.zygote.events_fd, self._zygote_events)
        self._startup = loop.create_future()
        for worker in self.workers:
            self._spawn(worker)
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await self._startup
        except TimeoutError:
            raise WorkerStartError(
                f"workers not serving after {STARTUP_TIMEOUT_S:.0f} s: "
                + "; ".join(self.not_ready())
            ) from None
        self._tasks.append(loop.create_task(self._watchdog()))
        self._spawn_task(self._refresh_window())

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor task failed", exc_info=task.exception())

    def _spawn(self, worker: WorkerProcess) -> None:
        worker.pid = 0
        worker.writer = None
        worker.listening = worker.ready = False
        worker.started = time.monotonic()
        # Its start counts as a beat: the watchdog gives it watchdog_s from now.
        self.heartbeats.beat(worker.id, worker.started)
        self.zygote.spawn(worker.id)

    def _zygote_events(self) -> None:
        for kind, first, second in self.zygote.read_events():
            if kind == "pid":
                if 0 <= first < len(self.workers):
                    self.workers[first].pid = second
            elif kind == "exit":
                self._worker_exited(first, second)
            else:
                asyncio.get_running_loop().remove_reader(self.zygote.events_fd)
                if not self.draining:
                    log.error("zygote gone: workers cannot be replaced")

    def _worker_exited(self, pid: int, status: int) -> None:
        worker = next((w for w in self.workers if w.pid == pid), None)
        if worker is None:
            return
        how = (
            f"signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"status {os.waitstatus_to_exitcode(status)}"
        )
        worker.pid = 0
        if self.draining:
            log.info("worker exited", extra={"worker": worker.id, "how": how})
            if all(w.pid == 0 for w in self.workers):
                self._exited.set()
            return
        if self._startup is not None and not self._startup.done() and not worker.listening:
            self._startup.set_exception(
                WorkerStartError(f"worker {worker.id} exited before serving ({how})")
            )
            return
        self.restarts["exit"] += 1
        lived = time.monotonic() - worker.started
        worker.quick_exits = worker.quick_exits + 1 if lived < 10.0 else 0
        delay = 0.0 if worker.quick_exits <= 1 else min(0.1 * 2**worker.quick_exits, 5.0)
        log.warning(
            "worker exited; starting another",
            extra={"worker": worker.id, "how": how, "lived_s": round(lived, 3), "delay_s": delay},
        )
        worker.writer = None
        worker.listening = False
        asyncio.get_running_loop().call_later(delay, self._respawn, worker)

    def _respawn(self, worker: WorkerProcess) -> None:
        if not self.draining and worker.pid == 0:
            self._spawn(worker)

    async def drain(self, timeout_s: float) -> None:
        """Tell every worker to drain; wait for them to exit (then kill what is left)."""
        self.draining = True
        for worker in self.workers:
            self._send(worker, {"t": "drain"})
        if any(w.pid for w in self.workers):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s + 2.0):
                    await self._exited.wait()
        await self.stop()

    async def stop(self) -> None:
        self.draining = True
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.zygote.events_fd)
        with contextlib.suppress(OSError):
            self.zygote.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)

    # -- the stream ----------------------------------------------------------------------

    async def _serve_worker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        worker: WorkerProcess | None = None
        try:
            # The same bounded read as every later line: a hello over the limit is refused.
            hello = await read_message(reader)
            if hello is None:
                raise StreamError("closed before its hello")
            number = hello.get("worker")
            if hello["t"] != "hello" or not isinstance(number, str) or not number.isdigit():
                raise StreamError("the first message is a hello with the worker's id")
            if not 0 <= int(number) < len(self.workers):
                raise StreamError(f"no worker {number}")
            worker = self.workers[int(number)]
            worker.writer = writer
            self.shares.forget(worker.id)  # a new process: 1/N of every limit, no calls yet
            self._send_snapshot(writer)
            while (message := await read_message(reader)) is not None:
                self._received(worker, message)
        except (StreamError, KeyError, ValueError, TypeError, OSError) as exc:
            log.error("worker stream closed: %s", exc, extra={"worker": worker and worker.id})
        finally:
            if worker is not None and worker.writer is writer:
                worker.writer = None
            writer.close()

    def _received(self, worker: WorkerProcess, message: Message) -> None:
        kind = message["t"]
        if kind in ("fail", "ok"):
            cluster = self.agent.clusters.get(str(message.get("c")))
            if cluster is not None:
                cluster.record_outcome(str(message.get("e")), kind == "ok")
                self._cluster_changed(cluster)
        elif kind == "readiness":
            worker.ready = bool(message.get("ready"))
            why = message.get("why")
            worker.why = [str(w) for w in why] if isinstance(why, list) else []
        elif kind == "listening":
            worker.listening = True
            worker.ready = True
            log.info("worker serving", extra={"worker": worker.id, "pid": worker.pid})
            startup = self._startup
            serving = all(w.listening for w in self.workers)
            if startup is not None and not startup.done() and serving:
                startup.set_result(None)
        elif kind == "demand":
            calls = message.get("d")
            if not isinstance(calls, dict):
                raise StreamError("demand without a mapping")
            demand = {int(position): int(count) for position, count in calls.items()}
            changed = self.shares.report(worker.id, int(message.get("g", -1)), demand)
            for target, shares in changed.items():
                self._send(
                    self.workers[target],
                    {
                        "t": "shares",
                        "g": self.shares.generation,
                        "s": {str(position): share for position, share in shares.items()},
                    },
                )
        elif kind == "metrics":
            future = self._requests.pop(int(message.get("n", -1)), None)
            if future is not None and not future.done():
                future.set_result(message)
        else:
            raise StreamError(f"unknown message type {kind!r}")

    def _send(self, worker: WorkerProcess, message: Message) -> None:
        writer = worker.writer
        if writer is not None and not writer.is_closing():
            writer.write(encode(message))

    def _broadcast(self, message: Message) -> None:
        line = encode(message)
        for worker in self.workers:
            writer = worker.writer
            if writer is not None and not writer.is_closing():
                writer.write(line)

    def _send_snapshot(self, writer: asyncio.StreamWriter) -> None:
        for cluster in self.agent.clusters.values():
            if cluster.revision is None:
                continue
            instances = tuple(host.instance for host in cluster.hosts())
            reset = Reset(cluster.revision, instances)
            writer.write(encode({"t": "update", "c": cluster.name, "u": update_to_json(reset)}))
            states = cluster.host_states()
            writer.write(encode({"t": "hosts", "c": cluster.name, "h": states}))
        if self._rules is not None:
            writer.write(encode(self._rules))
        if self._settings is not None:
            writer.write(encode(self._settings))
        writer.write(encode({"t": "ready"}))

    # -- MeshPublisher -------------------------------------------------------------------

    def cluster_update(self, cluster: Cluster, update: Update) -> None:
        self._broadcast({"t": "update", "c": cluster.name, "u": update_to_json(update)})

    def rules(self, rules: RuleSet | None) -> None:
        document = rules.model_dump(mode="json") if rules is not None else None
        source = self.agent.governance.state.source
        # Counted, so that the workers' demand and the shares name rules of one version.
        self.shares.new_generation(self.shares.generation + 1)
        generation = self.shares.generation
        self._rules = {"t": "rules", "rules": document, "source": source, "g": generation}
        self._broadcast(self._rules)

    def settings(self, settings: DynamicSettings | None) -> None:
        document = settings.model_dump(mode="json") if settings is not None else None
        self._settings = {"t": "settings", "settings": document}
        self._broadcast(self._settings)

    def _cluster_changed(self, cluster: Cluster) -> None:
        # Sent after the current step: a cluster rebalances inside apply(), before the
        # update itself is published, and a worker ignores states of hosts it lacks.
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush_states)
        self._dirty.add(cluster.name)

    def _flush_states(self) -> None:
        names, self._dirty = self._dirty, set()
        for name in names:
            cluster = self.agent.clusters[name]
            states = cluster.host_states()
            sent = self._sent.get(name, {})
            changed = {k: v for k, v in states.items() if sent.get(k) != v}
            self._sent[name] = states
            if changed:
                self._broadcast({"t": "hosts", "c": name, "h": changed})

    # -- watchdog, readiness, metrics ----------------------------------------------------

    async def _watchdog(self) -> None:
        # Every tick wakes an idle supervisor, which costs far more than the tick's work
        # (hundreds of microseconds on a virtual machine): one tick reads the workers'
        # heartbeats (shared memory: no message, no second wake-up) and samples the
        # supervisor's own loop lag.
        loop = asyncio.get_running_loop()
        interval = self.watchdog_s / 2
        self.agent.loop_lag.interval_s = interval
        # The status page's readings ride on the same tick, about every interval_s.
        window_every = max(1, round(self.agent.call_window.interval_s / interval))
        ticks = 0
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.agent.loop_lag.record(max(0.0, loop.time() - due))
            ticks += 1
            if ticks % window_every == 0:
                self._spawn_task(self._refresh_window())
            now = time.monotonic()
            for worker in self.workers:
                silent = now - self.heartbeats.last(worker.id)
                if not worker.pid or silent <= self.watchdog_s:
                    continue
                log.error(
                    "worker not answering: its event loop is blocked; replacing it",
                    extra={"worker": worker.id, "pid": worker.pid, "silent_s": round(silent, 1)},
                )
                self.restarts["watchdog"] += 1
                self.heartbeats.beat(worker.id, now)  # one kill per wedge
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def not_ready(self) -> list[str]:
        reasons = []
        for worker in self.workers:
            if not worker.listening:
                reasons.append(f"worker {worker.id} is not serving")
            elif not worker.ready:
                reasons.append(f"worker {worker.id}: {', '.join(worker.why) or 'not ready'}")
        return reasons

    async def scrape(self) -> list[Metric]:
        """One agent's metric families: the supervisor's own and each worker's, merged
        (agent/telemetry/worker_merge.py); what /metrics answers."""
        own = [*self.own.collect(), *self.collect()]
        return merge(own, await self.worker_metrics())

    async def endpoint_stats(self) -> dict[tuple[str, str], dict[str, int]]:
        """Per (cluster, endpoint): requests, failures, connect failures and requests in
        flight summed over every process, for /v1/clusters (each worker counts its own)."""
        wanted = {
            "meshagent_upstream_requests": "requests",
            "meshagent_upstream_failures": "failures",
            "meshagent_upstream_connect_failures": "connect_failures",
            "meshagent_upstream_active_requests": "active_requests",
        }
        found: dict[tuple[str, str], dict[str, int]] = {}
        for metric in await self.scrape():
            field = wanted.get(metric.name)
            if field is None:
                continue
            for sample in metric.samples:
                key = (sample.labels.get("cluster", ""), sample.labels.get("endpoint", ""))
                found.setdefault(key, {})[field] = int(sample.value)
        return found

    async def render_metrics(self) -> bytes:
        registry = Registry()
        registry.register(_Fixed(await self.scrape()))
        return render(registry)

    async def _refresh_window(self) -> None:
        """The status page's data: a reading of every process's call metrics, and the
        failed calls of late across them (each worker keeps its own). Only the call
        families travel: this runs every call window interval, idle or not."""
        own = self.agent.telemetry.metrics
        families = [*(own.collect() if own is not None else ())]
        for metrics in (await self.worker_metrics("window")).values():
            families.extend(metrics)
        self.agent.call_window.add(samples_of(families))
        failed = [*self._own_failures.calls]
        for calls in self._worker_failures.values():
            failed.extend(calls)
        failed.sort(key=lambda call: call.at)
        shown = self.agent.recent_failures
        shown.calls.clear()
        shown.calls.extend(failed[-(shown.calls.maxlen or len(failed)) :])

    async def worker_metrics(self, kind: str = "metrics") -> dict[str, list[Metric]]:
        """Each serving worker's metric families, as its own scrape would give them
        (``window``: its call metrics only, and its failed calls)."""
        loop = asyncio.get_running_loop()
        asked: dict[str, asyncio.Future[Message]] = {}
        for worker in self.workers:
            if worker.writer is None or not worker.listening:
                continue
            self._next_request += 1
            future: asyncio.Future[Message] = loop.create_future()
            self._requests[self._next_request] = future
            asked[str(worker.id)] = future
            self._send(worker, {"t": kind, "n": self._next_request})
        if asked:
            await asyncio.wait(asked.values(), timeout=METRICS_TIMEOUT_S)
        found: dict[str, list[Metric]] = {}
        for worker_id, future in asked.items():
            if future.done():
                with contextlib.suppress(StreamError):
                    reply = future.result()
                    found[worker_id] = metrics_from_json(reply.get("families"))
                    failures = failures_from_json(reply.get("failures", []))
                    self._worker_failures[worker_id] = failures
            else:
                future.cancel()
        for number, future in list(self._requests.items()):
            if future.done():
                del self._requests[number]
        return found

    def collect(self) -> Iterator[Metric]:
        """The supervisor's own families: its workers and their restarts."""
        workers = GaugeMetricFamily(
            "meshagent_workers", "Worker processes by state", labels=["state"]
        )
        workers.add_metric(["configured"], len(self.workers))
        workers.add_metric(["serving"], sum(1 for w in self.workers if w.listening))
        restarts = CounterMetricFamily(
            "meshagent_worker_restarts",
            "Workers started again: after exiting, or killed by the watchdog",
            labels=["reason"],
        )
        for reason, count in self.restarts.items():
            restarts.add_metric([reason], count)
        shares = GaugeMetricFamily(
            "meshagent_governance_share",
            "Each worker's part of a rule's rate limit and retry-budget floor "
            "(rules.N; sent when calls moved it from 1/workers)",
            labels=["rule", "worker"],
        )
        for worker, per_rule in sorted(self.shares.sent.items()):
            for position, share in sorted(per_rule.items()):
                shares.add_metric([str(position), str(worker)], share)
        yield from (workers, restarts, shares)

    def describe(self) -> list[dict[str, Any]]:
        """The workers as /readyz and the version output show them."""
        return [
            {"id": w.id, "pid": w.pid, "serving": w.listening, "ready": w.ready}
            for w in self.workers
        ]


class _Fixed:
    """Families already collected, as a collector (the merged scrape)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)
