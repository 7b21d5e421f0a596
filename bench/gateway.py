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

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)  # this folder would shadow the standard library's http
else:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_us  # noqa: E402
from bench.grpc_proxy import run_load  # noqa: E402
from bench.http_proxy import run_wrk, start_nginx  # noqa: E402
from tests.fixtures.gateways import Gateways, start_gateways  # noqa: E402
from tests.fixtures.grpc_peer import GoPeer, build_go_peer  # noqa: E402

GRPC_SERVICE = "bench.Echo"


def start_both(tmp: Path, web_port: int, grpc_port: int) -> Gateways:
    services = {"web": [{"host": "127.0.0.1", "port": web_port}]}
    services[GRPC_SERVICE] = [{"host": "127.0.0.1", "port": grpc_port}]
    return start_gateways(
        tmp,
        [{"name": "local", "type": "local", "config": {"services": services}}],
        [("web", "http"), (GRPC_SERVICE, "grpc")],
        quiet=True,
    )


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
            gateways = start_both(tmp, web_ports[0], grpc_server.port)
            web_import, grpc_import = gateways.imports["web"], gateways.imports[GRPC_SERVICE]
            pids = [gateways.a.pid, gateways.b.pid]
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
                gateways.stop()
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
