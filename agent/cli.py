"""``meshagent run | check-config | version | iptables | wait-ready | injector``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import __version__, capture_cli, stat_cli
from agent.config import AgentConfig, ignored_env_variables, load_config
from agent.errors import ConfigError, MeshAgentError
from agent.injector import cli as injector_cli
from agent.runtime.cpus import available_cpus

if TYPE_CHECKING:
    from agent.api.http1 import ApiServer
    from agent.runtime.agent import Agent
    from agent.runtime.heartbeat import Heartbeats
    from agent.runtime.zygote import Zygote

log = logging.getLogger("meshagent")

EXIT_CONFIG = 2


def _print_config_errors(path: str, exc: ConfigError) -> None:
    print(f"{path}: invalid configuration", file=sys.stderr)
    for line in exc.errors:
        print(f"  {line}", file=sys.stderr)


async def serve(config: AgentConfig) -> int:
    """One process does everything (``workers: 1``)."""
    from agent.runtime.admin import bind
    from agent.runtime.agent import Agent

    agent = Agent(config)
    admin_socket = bind(config.admin.host, config.admin.port)
    try:
        await agent.start()
    except MeshAgentError:
        admin_socket.close()
        raise
    (admin,) = await _serve_api(agent, admin_socket, None)
    for listener, lhost, lport in agent.listener_addresses():
        name, service = listener.config.display_name, listener.config.service
        print(f"listener {name} on {lhost}:{lport} -> {service}", flush=True)
    if agent.capture is not None:
        for chost, cport in agent.capture.addresses:
            print(f"capture on {chost}:{cport}", flush=True)
    if agent.inbound is not None:
        ihost, iport = agent.inbound.address
        inbound = config.inbound
        print(f"inbound on {ihost}:{iport} -> {inbound.app_host}:{inbound.app_port}", flush=True)
    _ready(admin.address)
    await _until_signal()
    log.info("signal received, draining")
    await agent.drain_and_stop()
    await admin.stop()
    log.info("stopped")
    return 0


async def _serve_api(
    agent: Agent,
    admin_socket: socket.socket,
    metrics: Callable[[], Awaitable[bytes]] | None,
    forwarded_path: str | None = None,
) -> list[ApiServer]:
    """``forwarded_path``: also serve on this Unix socket, trusting its client header
    (what the workers pass on, agent/api/forward.py)."""
    # Imported here so that check-config and version stay fast and light.
    from agent.api.asgi_bridge import AsgiApp, AsgiBridge
    from agent.api.fast_routes import FastRoutes
    from agent.api.http1 import ApiServer, Http1Limits

    settings = agent.config.admin

    def management_app() -> AsgiApp:
        # FastAPI only on the first request off the fast path (agent/api/asgi_bridge.py).
        from agent.api.app import create_app

        return create_app(agent)

    bridge = AsgiBridge(management_app, admin_socket.getsockname()[:2])
    limits = Http1Limits(
        max_body_bytes=settings.max_body_bytes,
        request_timeout_s=settings.request_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_connections=settings.max_connections,
    )
    routes = FastRoutes(agent, bridge, settings.allow_remote_invoke, metrics)
    admin = ApiServer(routes, admin_socket, limits)
    agent.api_connections = (admin.connections.__len__, admin.refusals, lambda: admin.accepted)
    await admin.start()
    servers = [admin]
    if forwarded_path is not None:
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(forwarded_path)
        os.chmod(forwarded_path, 0o600)
        unix.listen(128)
        unix.setblocking(False)
        trusted = dataclasses.replace(limits, trust_forwarded_client=True)
        forwarded = ApiServer(routes, unix, trusted)
        await forwarded.start()
        servers.append(forwarded)
    host, port = admin.address
    log.info("OpenAPI on http://%s:%d (docs at /docs)", host, port)
    return servers


def _ready(address: tuple[str, int]) -> None:
    # What start-up built lives as long as the agent: moved out of the collector's way, so
    # the full collections a busy agent runs walk only what its requests create.
    gc.collect()
    gc.freeze()
    host, port = address
    print(f"meshagent ready: OpenAPI on http://{host}:{port}", flush=True)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_supervisor(config: AgentConfig, plan: WorkerPlan) -> int:
    """``workers: N``: the supervisor (docs/workers.md); its workers are forked by
    ``plan.zygote`` and connect to ``plan.socket_path``."""
    from agent.runtime.agent import Agent, Role
    from agent.runtime.supervisor import Supervisor

    agent = Agent(config, Role.SUPERVISOR)
    supervisor = Supervisor(
        agent, plan.count, plan.zygote, plan.socket_path, config.worker_watchdog_s, plan.heartbeats
    )
    admin_socket = plan.admin_socket
    admin_socket.listen(128)
    admin_socket.setblocking(False)
    try:
        await agent.start()
        await supervisor.start()
    except MeshAgentError:
        admin_socket.close()
        await supervisor.stop()
        await agent.stop()
        raise
    admin, forwarded = await _serve_api(
        agent, admin_socket, supervisor.render_metrics, plan.api_path
    )
    for listener in config.listeners:
        print(
            f"listener {listener.display_name} on {listener.host}:{listener.port} "
            f"-> {listener.service}",
            flush=True,
        )
    if config.capture.enabled:
        print(f"capture on {config.capture.host}:{config.capture.port}", flush=True)
    if config.inbound.enabled:
        inbound = config.inbound
        print(
            f"inbound on {inbound.host}:{inbound.port} -> {inbound.app_host}:{inbound.app_port}",
            flush=True,
        )
    print(f"workers: {plan.count}", flush=True)
    _ready(admin.address)
    await _until_signal()
    log.info("signal received, draining")
    agent.draining = True
    deregistering = asyncio.ensure_future(agent.registrations.delete_all())
    await supervisor.drain(config.drain_timeout_s)
    await deregistering
    await agent.stop()
    await forwarded.stop()
    await admin.stop()
    log.info("stopped")
    return 0


def _run(args: argparse.Namespace) -> int:
    from agent.telemetry import logfmt

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    logfmt.configure(config.log_level)
    for name in ignored_env_variables(os.environ):
        log.warning("environment variable ignored: it names no setting", extra={"variable": name})
    try:
        import uvloop

        count = config.workers if isinstance(config.workers, int) else available_cpus()
        if count == 1:
            return uvloop.run(serve(config))
        return _run_workers(config, count)
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    except MeshAgentError as exc:
        print(f"meshagent: {exc}", file=sys.stderr)
        return EXIT_CONFIG


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    zygote: Zygote
    socket_path: str
    heartbeats: Heartbeats
    # The API's port (reserved with SO_REUSEPORT: the workers listen on it too), and the
    # Unix socket where the supervisor answers what the workers pass on.
    admin_socket: socket.socket
    api_path: str


def _run_workers(config: AgentConfig, count: int) -> int:
    """Reserve the ports, fork the zygote (before any thread or loop exists), then run
    the supervisor; each worker runs ``serve_worker`` in a process the zygote forks."""
    import uvloop

    from agent.runtime import worker as worker_module
    from agent.runtime.heartbeat import Heartbeats
    from agent.runtime.ports import reserve_ports
    from agent.runtime.zygote import Zygote
    from agent.telemetry import logfmt

    # Bind first, as one process does: a port in use is a start-up error with its name.
    config, reserved, admin_socket = reserve_ports(config)
    worker_module.preload(config)
    directory = tempfile.mkdtemp(prefix="meshagent-")
    socket_path = os.path.join(directory, "mesh.sock")
    api_path = os.path.join(directory, "api.sock")

    heartbeats = Heartbeats(count)

    def run_worker(number: int) -> int:
        logfmt.add_field("worker", str(number))
        paths = worker_module.SupervisorPaths(socket_path, api_path)
        serving = worker_module.serve_worker(config, number, count, paths, heartbeats)
        return uvloop.run(serving)

    def release() -> None:
        # In the zygote: the reservations are the supervisor's alone.
        for sock in reserved:
            os.close(sock.detach())

    zygote = Zygote.start(run_worker, release)
    try:
        plan = WorkerPlan(count, zygote, socket_path, heartbeats, admin_socket, api_path)
        return uvloop.run(serve_supervisor(config, plan))
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _check(args: argparse.Namespace) -> int:
    # Building the agent (no socket is opened, nothing is started) also validates every
    # plugin's own settings: registries', listeners' protocol config, checkers', LB
    # policies', which the core config only carries as mappings.
    from agent.runtime.agent import Agent

    try:
        Agent(load_config(args.config))
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    for name in ignored_env_variables(os.environ):
        print(f"meshagent: {name} ignored: it names no setting", file=sys.stderr)
    print(f"{args.config}: ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshagent", description="service-mesh sidecar agent")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", default="examples/agent.yaml")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    commands.add_parser("version", help="print the version")
    capture_cli.add_parsers(commands)
    injector_cli.add_parser(commands)
    stat_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "iptables":
        return capture_cli.run_iptables(args)
    if args.command == "wait-ready":
        return capture_cli.run_wait_ready(args)
    if args.command == "injector":
        return injector_cli.run(args)
    if args.command == "stat":
        return stat_cli.run(args)
    if args.command == "run":
        return _run(args)
    if args.command == "check-config":
        return _check(args)
    print(f"meshagent {__version__}")
    if args.command == "version":
        # What `workers: auto` gives here: the CPUs this process may use (docs/workers.md).
        print(f"workers: auto = {available_cpus()} (CPU affinity and cgroup quota)")
        from agent.compiled import compiled_modules

        found = compiled_modules()
        compiled = sorted(name for name, native in found.items() if native)
        interpreted = sorted(name for name, native in found.items() if not native)
        print(f"compiled with mypyc: {len(compiled)} of {len(found)} listed modules")
        for name in compiled:
            print(f"  compiled     {name}")
        for name in interpreted:
            print(f"  interpreted  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
