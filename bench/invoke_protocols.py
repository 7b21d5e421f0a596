"""The JSON invocation for gRPC and Thrift: wrk -> POST /v1/invoke/{grpc,thrift}/... ->
meshagent -> a Python provider (grpcio echo server; thriftpy2 framed-binary server).

    /work/main/.venv/bin/python bench/invoke_protocols.py [--rounds N --duration S]
        [--baseline DIR]

Reported once, without a target (issue 19): agent CPU per call and calls/s at 1 and 8
connections, for ``Echo/Unary`` with a 16-byte message and Thrift ``echo`` with a small
struct. The providers are Python, so calls/s says more about them than about the agent;
the agent's CPU per call (utime+stime of its process over the measured run, divided by
the calls wrk completed) is the figure. ``--baseline DIR`` runs another checkout's agent
in the same rotation (``*-base`` rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from bench.dubbo_invoke import run_wrk  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.grpc_peer import ECHO, echo_servers_named, generate_stubs  # noqa: E402
from tests.fixtures.thrift_server import IDL, start_server  # noqa: E402

BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "grpc": (f"/v1/invoke/grpc/{ECHO}/Unary", {"message": {"message": "x" * 16}}),
    "thrift": (
        "/v1/invoke/thrift/thrift-echo/echo",
        {"args": {"item": {"name": "x" * 16, "id": 7, "numbers": [1, 2, 3]}}},
    ),
}


def agent_config(grpc_ports: list[int], thrift_port: int) -> dict[str, Any]:
    local = {
        ECHO: [{"host": "127.0.0.1", "port": p, "id": f"echo-{p}"} for p in grpc_ports],
        "thrift-echo": [{"host": "127.0.0.1", "port": thrift_port}],
    }
    return {
        "registries": [{"name": "local", "type": "local", "config": {"services": local}}],
        "services": [
            {"name": ECHO, "registry": "local", "protocol": "grpc", "health": {"enabled": False}},
            {
                "name": "thrift-echo",
                "registry": "local",
                "protocol": "thrift",
                "health": {"enabled": False},
                "options": {"idl": str(IDL), "protocol": "binary", "transport": "framed"},
            },
        ],
        "drain_timeout_s": 1,
        "log_level": "WARNING",
    }


def write_lua(tmp: Path, name: str, body: dict[str, Any]) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body, separators=(',', ':')))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-invoke-protocols-"))
    with ExitStack() as stack:
        stubs = generate_stubs(tmp / "stubs")
        servers = stack.enter_context(echo_servers_named(tmp, stubs, "echo-a"))
        thrift = start_server(tmp, "thrift-echo", "framed-binary")
        stack.callback(thrift.stop)
        config = agent_config([s.port for s in servers], thrift.port)
        agents: dict[str, AgentProcess] = {"agent": start_agent(tmp, config)}
        stack.callback(agents["agent"].stop)
        if args.baseline is not None:
            agents["base"] = start_agent(tmp, config, name="baseline", root=args.baseline.resolve())
            stack.callback(agents["base"].stop)
        scripts = {name: write_lua(tmp, name, body) for name, (_, body) in BODIES.items()}
        for agent in agents.values():
            for name, (path, body) in BODIES.items():
                reply = httpx.post(f"{agent.base_url}{path}", json=body, timeout=10)
                if reply.status_code != 200:
                    raise SystemExit(f"{name} invoke answered {reply.status_code}: {reply.text}")
        results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):
            for connections in (8, 1):
                order = [(p, a) for p in BODIES for a in agents]
                order = order[round_no % len(order) :] + order[: round_no % len(order)]
                for protocol, agent_name in order:
                    agent = agents[agent_name]
                    url = f"{agent.base_url}{BODIES[protocol][0]}"
                    run_wrk(url, scripts[protocol], connections, args.warmup)
                    before = cpu_us(agent.pid)
                    result = run_wrk(url, scripts[protocol], connections, args.duration)
                    spent = cpu_us(agent.pid) - before
                    if result.errors:
                        raise SystemExit(f"{protocol} via {agent_name}: {result.errors} errors")
                    results.setdefault((protocol, agent_name, connections), []).append(
                        (result.rps, spent / max(1, result.requests))
                    )
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nJSON invocation, {args.duration:g}s x {args.rounds} rounds (medians [min..max])\n")
    print(f"{'path':<22} {'conns':>5} {'calls/s':>22} {'agent CPU us/call':>24}")
    for (protocol, agent_name, connections), values in sorted(results.items()):
        rates = [r for r, _ in values]
        cpus = [c for _, c in values]
        print(
            f"{protocol + ' via ' + agent_name:<22} {connections:>5} "
            f"{statistics.median(rates):>10,.0f} [{min(rates):,.0f}..{max(rates):,.0f}] "
            f"{statistics.median(cpus):>10,.0f} [{min(cpus):,.0f}..{max(cpus):,.0f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
