"""A worker process: the data plane, fed the mesh's state by the supervisor (docs/workers.md).

The worker builds the agent in ``Role.WORKER`` (listeners, capture and inbound on
SO_REUSEPORT sockets; no registry, registration, health check or API), connects to the
supervisor's Unix socket, applies the snapshot before it binds anything (so its first
client already sees every endpoint), then follows the stream in order. Its clusters send
their passive outlier signals to the supervisor (``Cluster.remote``), which decides
ejections for all workers; the supervisor's pings are answered from this loop, so a
wedged loop is seen by the watchdog there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from agent.api.fast_routes import FastRoutes
from agent.api.forward import SupervisorForward
from agent.api.http1 import ApiServer, Http1Limits
from agent.config import AgentConfig
from agent.errors import MeshAgentError
from agent.governance.rules import RuleSet
from agent.runtime.admin import bind
from agent.runtime.agent import Agent, Role
from agent.runtime.heartbeat import Heartbeats
from agent.runtime.mesh_stream import (
    MAX_LINE,
    Message,
    StreamError,
    encode,
    failures_to_json,
    host_states_from_json,
    metrics_to_json,
    read_message,
    update_from_json,
)
from agent.runtime.settings import DynamicSettings, SettingsApplier
from agent.telemetry.metrics import metrics_registry

log = logging.getLogger(__name__)

EXIT_STARTUP = 2
EXIT_STREAM = 3
# How often a worker with calls on limited rules reports them (its shares follow them).
DEMAND_INTERVAL_S = 1.0


class SupervisorLink:
    """The worker's end of the stream: applies what the supervisor sends, and is every
    cluster's ``remote`` (the outlier signals go back over it)."""

    def __init__(
        self,
        agent: Agent,
        writer: asyncio.StreamWriter,
        heartbeats: Heartbeats | None = None,
        number: int = 0,
    ) -> None:
        self.agent = agent
        self.writer = writer
        self.heartbeats = heartbeats
        self.number = number
        self._readiness: tuple[bool, list[str]] | None = None
        self.synced = asyncio.Event()
        self.drain_requested = asyncio.Event()
        self._settings = SettingsApplier(agent)
        self._registry = metrics_registry(agent)
        self.applied = 0
        # Which rule set the supervisor's shares refer to (it counts the rules it sends).
        self.rules_generation = 0
        self._demand_due = 0.0

    # -- OutcomeSink ---------------------------------------------------------------------

    def failure(self, cluster: str, endpoint: str) -> None:
        self.send({"t": "fail", "c": cluster, "e": endpoint})

    def success(self, cluster: str, endpoint: str) -> None:
        self.send({"t": "ok", "c": cluster, "e": endpoint})

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    def tick(self) -> None:
        """On each loop tick: the heartbeat the supervisor's watchdog reads, and this
        worker's readiness when it changed (its probe is the supervisor's /readyz)."""
        if self.heartbeats is not None:
            self.heartbeats.beat(self.number)
        readiness = self.agent.ready()
        if readiness != self._readiness:
            self._readiness = readiness
            self.send({"t": "readiness", "ready": readiness[0], "why": readiness[1]})
        now = time.monotonic()
        if now >= self._demand_due:
            self._demand_due = now + DEMAND_INTERVAL_S
            self.report_demand()

    def report_demand(self) -> None:
        """The calls that met each limited rule since the last report, if there were any
        (an idle worker sends nothing)."""
        calls = self.agent.governance.demand()
        if calls:
            demand = {str(position): count for position, count in calls.items()}
            self.send({"t": "demand", "g": self.rules_generation, "d": demand})

    # -- the stream ----------------------------------------------------------------------

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Apply messages until the supervisor closes the stream."""
        while (message := await read_message(reader)) is not None:
            self.apply(message)

    def apply(self, message: Message) -> None:
        kind = message["t"]
        agent = self.agent
        if kind == "update":
            cluster = agent.clusters.get(str(message.get("c")))
            if cluster is not None:
                cluster.apply(update_from_json(message.get("u")))
                self.applied += 1
        elif kind == "hosts":
            cluster = agent.clusters.get(str(message.get("c")))
            if cluster is not None:
                cluster.set_host_states(host_states_from_json(message.get("h")))
        elif kind == "rules":
            self.rules_generation = int(message.get("g", 0))
            document = message.get("rules")
            if document is None:
                agent.governance.set_rules(agent.config.governance.rules, "static", None)
            else:
                rules = RuleSet.model_validate(document)
                agent.governance.set_rules(rules, str(message.get("source", "")), None)
        elif kind == "settings":
            document = message.get("settings")
            settings = DynamicSettings.model_validate(document) if document is not None else None
            self._settings(settings)
        elif kind == "shares":
            # Shares for another rule set than the one in force are stale: dropped.
            if int(message.get("g", -1)) == self.rules_generation:
                shares = message.get("s")
                if not isinstance(shares, dict):
                    raise StreamError("shares without a mapping")
                self.agent.governance.set_shares(
                    {int(position): float(share) for position, share in shares.items()}
                )
        elif kind == "ready":
            self.synced.set()
        elif kind == "window":
            # The status page's reading: call metrics and failed calls only.
            metrics = agent.telemetry.metrics
            calls = list(metrics.collect()) if metrics is not None else []
            failures = failures_to_json(list(agent.recent_failures.calls))
            reply = {"t": "metrics", "n": message.get("n"), "families": metrics_to_json(calls)}
            self.send({**reply, "failures": failures})
        elif kind == "metrics":
            families = metrics_to_json(list(self._registry.collect()))
            failures = failures_to_json(list(agent.recent_failures.calls))
            reply = {"t": "metrics", "n": message.get("n"), "families": families}
            self.send({**reply, "failures": failures})
        elif kind == "drain":
            self.drain_requested.set()
        else:
            raise StreamError(f"unknown message type {kind!r}")


@dataclass(frozen=True)
class SupervisorPaths:
    # The stream of the mesh's state, and the supervisor's API for what a worker passes on.
    stream: str
    api: str


async def serve_worker(
    config: AgentConfig, number: int, workers: int, paths: SupervisorPaths, heartbeats: Heartbeats
) -> int:
    """Run one worker until it is told to drain (a signal or the supervisor) or loses
    the supervisor. Returns the process's exit status."""
    worker = str(number)
    agent = Agent(config, Role.WORKER, worker, workers)
    reader, writer = await asyncio.open_unix_connection(paths.stream, limit=MAX_LINE)
    link = SupervisorLink(agent, writer, heartbeats, number)
    agent.loop_lag.on_tick = link.tick
    for cluster in agent.clusters.values():
        cluster.remote = link
    link.send({"t": "hello", "worker": worker, "pid": os.getpid()})
    following = asyncio.ensure_future(link.follow(reader))
    synced = asyncio.ensure_future(link.synced.wait())
    await asyncio.wait([following, synced], return_when=asyncio.FIRST_COMPLETED)
    if not link.synced.is_set():
        synced.cancel()
        log.error("supervisor stream ended before its snapshot")
        return EXIT_STREAM
    try:
        await agent.start()
        api = await _serve_api(agent, paths.api)
    except MeshAgentError as exc:
        log.error("worker cannot start: %s", exc)
        return EXIT_STARTUP
    link.send({"t": "listening"})
    link.tick()
    # As in a single agent: what start-up built stays out of the collector's way.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    waits = [
        following,
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(link.drain_requested.wait()),
    ]
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if following in done:
        # The supervisor is gone (it would have said drain): stop at once, as it did.
        error = following.exception()
        log.error(
            "supervisor stream lost; stopping",
            extra={"error": str(error) if error else "closed"},
        )
        status = EXIT_STREAM
        await agent.stop()
    else:
        await agent.drain_and_stop()
    await api.stop()
    for wait in waits:
        wait.cancel()
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return status


async def _serve_api(agent: Agent, supervisor_api: str) -> ApiServer:
    """The API port, shared with the supervisor and the other workers (SO_REUSEPORT): the
    health probe and the JSON invocations answered here, the rest passed on."""
    settings = agent.config.admin
    sock = bind(settings.host, settings.port, reuse_port=True)
    limits = Http1Limits(
        max_body_bytes=settings.max_body_bytes,
        request_timeout_s=settings.request_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_connections=settings.max_connections,
    )
    forward = SupervisorForward(supervisor_api)
    routes = FastRoutes(agent, forward, settings.allow_remote_invoke, own_probes=False)
    api = ApiServer(routes, sock, limits)
    agent.api_connections = (api.connections.__len__, api.refusals, lambda: api.accepted)
    await api.start()
    return api


def preload(config: AgentConfig) -> None:
    """Import, before the zygote forks, the protocol modules the workers will run: their
    pages are then shared by every worker instead of loaded by each."""
    from agent.plugins import PluginKind, load

    for listener in config.listeners:
        plugin = load(PluginKind.PROTOCOL, listener.protocol)
        module = plugin.factory.__module__
        with contextlib.suppress(ImportError):
            importlib.import_module(f"{module}.protocol")
