"""The Dubbo listener's own Python work per call, in-process, with fake transports.

    /work/main/.venv/bin/python bench/dubbo_inproc.py [--calls N --batch B --repeat R]

No sockets and no syscalls: a DubboProxyConnection and an UpstreamConnection from this
checkout get bytes through ``data_received`` and write into lists. One call is a request
frame in (client side), routed and written to the provider connection, the provider's
answer in, and the response written back to the client: two frames. ``--batch B`` hands
B requests to the proxy in one ``data_received`` (and their B answers to the upstream in
one), as a loaded client's reads do; B=1 is the one-frame-per-read case. Real uvloop
timers (the per-request deadline) are armed and cancelled, as in production.

Prints the best of R repeats in CPU microseconds (process time: on a shared machine wall
time is not the proxy's) per call and per frame, plus transport
write calls per frame (one ``write``/``writelines`` is one send syscall on uvloop).

``--telemetry`` measures the same loop with the agent's call hub as configured (see
docs/observability.md), variants interleaved repeat by repeat: "off" (nothing plugged in),
"metrics" (metrics only, no call context), "default" (call context + metrics),
"trace-100%", "trace-1%" (tracing; spans exported over OTLP/gRPC to ``--otlp URL``
when given, else to an exporter that discards them, which leaves out the export
thread's serialization).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# --root DIR: measure another checkout's proxy (e.g. `git archive REV | tar -x -C DIR`).
if "--root" in sys.argv:
    ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from agent.cluster.cluster import Cluster  # noqa: E402
from agent.cluster.lb import RoundRobin  # noqa: E402
from agent.config import ListenerConfig, ServiceConfig  # noqa: E402
from agent.discovery.types import Instance, Reset  # noqa: E402
from agent.runtime.protocols import ListenerContext  # noqa: E402
from plugins.dubbo.body import request_frame  # noqa: E402
from plugins.dubbo.config import DubboConfig  # noqa: E402
from plugins.dubbo.frame import HEADER, MAGIC  # noqa: E402
from plugins.dubbo.proxy import DubboProxyConnection  # noqa: E402
from plugins.dubbo.upstream import UpstreamConnection, UpstreamPool  # noqa: E402

INTERFACE = "org.meshagent.interop.api.GreetingService"
# What the Java consumer sends for echo("hi") (tests/unit/plugins/dubbo/test_body.py).
ECHO_BODY = (
    b"\x052.0.20)org.meshagent.interop.api.GreetingService\x050.0.0\x04echo"
    b"\x12Ljava/lang/String;\x02hiH\x04path0)org.meshagent.interop.api.GreetingService"
    b"\x12remote.application\x1ameshagent-interop-consumer\tinterface0)"
    b"org.meshagent.interop.api.GreetingService\x07version\x050.0.0\x07timeout\x043000Z"
)
ECHO_RESULT = b"\x94\x02hiH\x05dubbo\x052.0.2Z"


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.out.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.writes += 1
        self.out.append(b"".join(chunks))

    def get_extra_info(self, _key: str) -> Any:
        return ("127.0.0.1", 1)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request_ids(data: bytes) -> list[int]:
    ids, pos = [], 0
    while pos < len(data):
        _magic, _flags, _status, rid, length = HEADER.unpack_from(data, pos)
        ids.append(rid)
        pos += 16 + length
    return ids


def _hub(variant: str, otlp: str | None) -> Any:
    """The call hub for a --telemetry variant (None: the context's default, nothing on)."""
    if variant == "off":
        return None
    from agent.calls import Calls
    from agent.config import TelemetryConfig
    from agent.telemetry.setup import install

    calls = Calls("bench")
    tracing: dict[str, Any] = {}
    if variant.startswith("trace"):
        ratio = 1.0 if variant == "trace-100%" else 0.01
        tracing = {"enabled": True, "sample_ratio": ratio, "endpoint": otlp or ""}
    config = TelemetryConfig.model_validate(
        {"context": {"enabled": variant != "metrics"}, "tracing": {"enabled": False}}
    )
    telemetry = install(calls, config)
    if tracing:
        from agent.telemetry.tracing import Tracing

        exporter = None
        if otlp is None:
            from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

            class Discard(SpanExporter):
                def export(self, spans: Any) -> SpanExportResult:
                    return SpanExportResult.SUCCESS

            exporter = Discard()
        tracing_config = TelemetryConfig.model_validate({"tracing": tracing}).tracing
        telemetry.tracing = Tracing(tracing_config, "bench", exporter)
        calls.observers.append(telemetry.tracing)
    return calls


async def run(
    calls: int, batch: int, repeat: int, variants: list[str] | None = None, otlp: str | None = None
) -> None:
    if variants is None:
        return await _run_one(calls, batch, repeat)
    rounds_by: dict[str, Any] = {}
    for variant in variants:
        rounds_by[variant] = _setup(batch, _hub(variant, otlp))[0]
    rounds = max(1, calls // batch)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeat):
        for variant in variants:
            one_round = rounds_by[variant]
            start = time.process_time()
            for _ in range(rounds):
                one_round()
            best[variant] = min(best[variant], time.process_time() - start)
    base = best[variants[0]]
    for variant in variants:
        per_call = best[variant] / (rounds * batch) * 1e6
        print(
            f"batch {batch:>3} {variant:<11}: {per_call:6.2f} us/call "
            f"({best[variant] / base:.3f}x of {variants[0]})"
        )
    return None


def _setup(batch: int, hub: Any = None) -> tuple[Any, FakeTransport, FakeTransport]:
    """One listener connection and its provider connection, and a round of ``batch`` calls
    through them; ``hub`` is the call hub (None: the context's default)."""
    cluster = Cluster(INTERFACE, RoundRobin())
    cluster.apply(Reset(1, (Instance("a", "127.0.0.1", 1),)))
    context = ListenerContext(
        ListenerConfig(port=1, service=INTERFACE, protocol="dubbo"),
        ServiceConfig(name=INTERFACE, protocol="dubbo"),
        cluster,
        **({"calls": hub} if hub is not None else {}),
    )
    pool = UpstreamPool()
    host = cluster.hosts()[0]
    shared = getattr(pool, "batch", None)  # absent before write coalescing
    if hasattr(pool, "codec"):  # the shared multiplexing pool
        upstream = UpstreamConnection(host, pool.codec(), shared)
    else:
        upstream = UpstreamConnection(host, **({"batch": shared} if shared is not None else {}))
    up_transport = FakeTransport()
    upstream.connection_made(up_transport)  # type: ignore[arg-type]
    if hasattr(pool, "add"):  # the shared multiplexing pool
        pool.add(upstream)
    else:
        pool._connections[("127.0.0.1", 1)] = upstream
    proxy = DubboProxyConnection(context, DubboConfig(), pool)
    client_transport = FakeTransport()
    proxy.connection_made(client_transport)  # type: ignore[arg-type]
    chunk = b"".join(request_frame(i, ECHO_BODY) for i in range(batch))
    answer = HEADER.pack(MAGIC, 2, 20, 0, len(ECHO_RESULT)) + ECHO_RESULT

    def one_round() -> None:
        proxy.data_received(chunk)
        sent = b"".join(up_transport.out)
        up_transport.out.clear()
        upstream.data_received(
            b"".join(answer[:4] + rid.to_bytes(8, "big") + answer[12:] for rid in request_ids(sent))
        )
        client_transport.out.clear()

    for _ in range(1000):  # warm caches
        one_round()
    return one_round, up_transport, client_transport


async def _run_one(calls: int, batch: int, repeat: int) -> None:
    one_round, up_transport, client_transport = _setup(batch)
    rounds = max(1, calls // batch)
    best = float("inf")
    writes = 0
    for _ in range(repeat):
        up_transport.writes = client_transport.writes = 0
        start = time.process_time()
        for _ in range(rounds):
            one_round()
        best = min(best, time.process_time() - start)
        writes = up_transport.writes + client_transport.writes
    per_call = best / (rounds * batch) * 1e6
    print(
        f"batch {batch:>3}: {per_call:6.2f} us/call, {per_call / 2:6.2f} us/frame, "
        f"{writes / (2 * rounds * batch):.3f} writes/frame"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, action="append", help="requests per read (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", type=Path, help="checkout whose proxy to measure")
    parser.add_argument(
        "--telemetry", action="store_true", help="compare telemetry settings (see above)"
    )
    parser.add_argument("--otlp", help="OTLP/gRPC endpoint for the tracing variants")
    args = parser.parse_args(argv)
    variants = ["off", "metrics", "default", "trace-100%", "trace-1%"] if args.telemetry else None
    for batch in args.batch or [1, 8]:
        uvloop.run(run(args.calls, batch, args.repeat, variants, args.otlp))
    print(f"(proxy code from {ROOT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
