"""What two gateway hops add: a call direct to the provider, against the same call through
an import port of gateway A, the mutual-TLS HTTP/2 link, and gateway B (docs/gateway.md).

    /work/main/.venv/bin/python bench/gateway.py [--rounds N --duration S]

Everything runs on 127.0.0.1 and is started here: nginx (one worker, ``GET /`` answering
2 bytes; a bench dependency) and the grpc-go peer as the providers; gateway B exporting
both; gateway A importing both on fixed ports (``gateway.imports``). HTTP/1.1: wrk, 16
keep-alive connections. gRPC: the grpc-go load generator, 16 unary calls of 16 bytes in
flight on one connection. Each round runs direct and through the gateways in turn, the
order swapped every round; figures are medians over rounds, ratios medians of per-round
ratios. CPU per call: both gateways' utime+stime (/proc/PID/stat) over the run, divided
by the calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)  # this folder would shadow the standard library's http
else:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from bench.grpc_proxy import run_load  # noqa: E402
from bench.http_proxy import run_wrk, start_nginx  # noqa: E402
from tests.fixtures.agent_process import AgentProcess, start_agent  # noqa: E402
from tests.fixtures.grpc_peer import GoPeer, build_go_peer  # noqa: E402
from tests.fixtures.processes import free_port  # noqa: E402
from tests.fixtures.tls import issue, make_ca  # noqa: E402

GRPC_SERVICE = "bench.Echo"


def tls(directory: Path) -> dict[str, str]:
    return {
        "cert_file": str(directory / "tls.crt"),
        "key_file": str(directory / "tls.key"),
        "ca_file": str(directory.parent / "ca.pem"),
    }


def start_gateways(
    tmp: Path, web_port: int, grpc_port: int
) -> tuple[AgentProcess, AgentProcess, int, int]:
    certs = tmp / "certs"
    certs.mkdir()
    ca = make_ca("bench-gateways")
    (certs / "ca.pem").write_bytes(ca.pem)
    for name in ("a", "b"):
        issue(ca, certs / name, hosts=("meshagent-gateway",))
    link_b, web_import, grpc_import = free_port(), free_port(), free_port()
    quiet: dict[str, Any] = {"health": {"enabled": False}}
    gateway_b = start_agent(
        tmp / "gateway-b",
        {
            "registries": [
                {
                    "name": "local",
                    "type": "local",
                    "config": {
                        "services": {
                            "web": [{"host": "127.0.0.1", "port": web_port}],
                            GRPC_SERVICE: [{"host": "127.0.0.1", "port": grpc_port}],
                        }
                    },
                }
            ],
            "services": [
                {"name": "web", "protocol": "http", **quiet},
                {"name": GRPC_SERVICE, "protocol": "grpc", **quiet},
            ],
            "gateway": {"dc": "b", "port": link_b, "tls": tls(certs / "b"), "export": ["*"]},
            "log_level": "WARNING",
        },
        name="gateway-b",
    )
    gateway_a = start_agent(
        tmp / "gateway-a",
        {
            "services": [
                {"name": "web", "protocol": "http", **quiet},
                {"name": GRPC_SERVICE, "protocol": "grpc", **quiet},
            ],
            "gateway": {
                "dc": "a",
                "port": 0,
                "tls": tls(certs / "a"),
                "peers": [{"dc": "b", "addresses": [f"127.0.0.1:{link_b}"]}],
                "imports": [
                    {"service": "web", "dc": "b", "port": web_import},
                    {"service": GRPC_SERVICE, "dc": "b", "port": grpc_import},
                ],
            },
            "log_level": "WARNING",
        },
        name="gateway-a",
    )
    return gateway_a, gateway_b, web_import, grpc_import


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    nginx, web_ports, _ = start_nginx(tmp)
    binary = build_go_peer(tmp)
    results: dict[str, dict[str, list[float]]] = {}

    def record(kind: str, target: str, **values: float) -> None:
        for name, value in values.items():
            results.setdefault(f"{kind} {target}", {}).setdefault(name, []).append(value)

    try:
        with GoPeer(tmp, binary, "go-server") as grpc_server:
            gateway_a, gateway_b, web_import, grpc_import = start_gateways(
                tmp, web_ports[0], grpc_server.port
            )
            pids = [gateway_a.pid, gateway_b.pid]
            try:
                for round_no in range(args.rounds):
                    order = [("direct", web_ports[0], grpc_server.port)]
                    order.append(("gateways", web_import, grpc_import))
                    if round_no % 2:
                        order.reverse()
                    for target, web, grpc in order:
                        before = sum(cpu_us(pid) for pid in pids)
                        http = run_wrk(web, args.duration, args.connections)
                        cpu = (sum(cpu_us(pid) for pid in pids) - before) / max(http["requests"], 1)
                        record("http", target, **http, cpu=cpu)
                        before = sum(cpu_us(pid) for pid in pids)
                        unary = run_load(
                            binary,
                            grpc,
                            "-duration",
                            str(args.duration),
                            "-concurrency",
                            str(args.connections),
                            timeout=args.duration + 60,
                        )
                        cpu = (sum(cpu_us(pid) for pid in pids) - before) / max(unary["calls"], 1)
                        record(
                            "grpc",
                            target,
                            rate=unary["rate"],
                            p50=unary["p50_us"] / 1000,
                            p99=unary["p99_us"] / 1000,
                            errors=unary["errors"],
                            cpu=cpu,
                        )
                        print(
                            f"round {round_no + 1} {target}: http {http} grpc {unary}", flush=True
                        )
                report(results, args)
            finally:
                gateway_a.stop()
                gateway_b.stop()
    finally:
        nginx.stop()
    return 0


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.rounds} rounds x {args.duration:g}s, {args.connections} connections (HTTP) "
        "or calls in flight (gRPC); medians\n"
    )
    print(
        f"{'':16} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'gateways CPU us/call':>21}"
    )
    for key, values in results.items():
        cpu = med(values["cpu"]) if key.endswith("gateways") else float("nan")
        print(
            f"{key:16} {med(values['rate']):9.0f} {med(values['p50']):8.3f} "
            f"{med(values['p99']):8.3f} {sum(values['errors']):7.0f} {cpu:21.1f}"
        )
    for kind in ("http", "grpc"):
        direct, through = results[f"{kind} direct"], results[f"{kind} gateways"]
        ratios = [g / d for g, d in zip(through["rate"], direct["rate"], strict=True)]
        added = [g - d for g, d in zip(through["p50"], direct["p50"], strict=True)]
        print(
            f"{kind}: throughput through the gateways / direct = {med(ratios):.2f}x; "
            f"added p50 = {med(added):.3f} ms"
        )


if __name__ == "__main__":
    raise SystemExit(main())
