"""The Thrift listener's own Python work per call, in-process, with fake transports.

    /work/main/.venv/bin/python bench/thrift_inproc.py [--calls N --batch B --repeat R]
    [--proto binary|compact] [--root DIR] [--profile FILE]

No sockets and no syscalls: a ThriftProxyConnection and an upstream connection from this
checkout (or ``--root DIR``, another checkout: `git archive REV | tar -x -C DIR`) get bytes
through ``data_received`` and write into lists. One call is a framed ``ping()`` CALL in
(client side), routed and written to the provider connection, the provider's REPLY in,
and the reply written back to the client: two messages. ``--batch B`` hands B calls to the
proxy in one ``data_received`` (and their B replies to the upstream in one), as a loaded
client's reads do. Real uvloop timers and deadlines are used, as in production.

Prints the best of R repeats in CPU microseconds per call (process time: the machine is
shared, wall time is not the proxy's), plus transport writes per message.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# --root DIR: measure another checkout's proxy.
if "--root" in sys.argv:
    ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from agent.cluster.cluster import Cluster  # noqa: E402
from agent.cluster.lb import RoundRobin  # noqa: E402
from agent.config import ListenerConfig, ServiceConfig  # noqa: E402
from agent.discovery.types import Instance, Reset  # noqa: E402
from agent.runtime.protocols import ListenerContext  # noqa: E402
from plugins.thrift.codec import (  # noqa: E402
    Header,
    MessageType,
    Proto,
    Transport,
    encode_header,
    frame,
)
from plugins.thrift.config import ThriftConfig  # noqa: E402
from plugins.thrift.proxy import ThriftProxyConnection  # noqa: E402
from plugins.thrift.upstream import UpstreamPool  # noqa: E402

SERVICE = "echo"


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

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def call_bytes(proto: Proto, seqid: int) -> bytes:
    return frame(
        encode_header(Header("ping", MessageType.CALL, seqid, proto)) + b"\x00", Transport.FRAMED
    )


def reply_bytes(proto: Proto, seqid: int) -> bytes:
    # ping() returns "pong": result struct {0: string}
    if proto is Proto.COMPACT:
        body = b"\x08\x00\x04pong\x00"  # field 0 needs the long header: type 8, zigzag id 0
    else:
        body = b"\x0b\x00\x00\x00\x00\x00\x04pong\x00"
    return frame(
        encode_header(Header("ping", MessageType.REPLY, seqid, proto)) + body, Transport.FRAMED
    )


def seqids(data: bytes, proto: Proto) -> list[int]:
    """The seqids of the framed messages in ``data`` (this bench's own short names)."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">i", data, pos)
        msg = data[pos + 4 : pos + 4 + length]
        if proto is Proto.COMPACT:
            value, shift, i = 0, 0, 2
            while True:
                byte = msg[i]
                value |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            out.append(value)
        else:
            (name_len,) = struct.unpack_from(">i", msg, 4)
            out.append(struct.unpack_from(">i", msg, 8 + name_len)[0])
        pos += 4 + length
    return out


def make_proxy(proto: Proto) -> tuple[Any, Any, FakeTransport, FakeTransport]:
    cluster = Cluster(SERVICE, RoundRobin())
    cluster.apply(Reset(1, (Instance("a", "127.0.0.1", 1),)))
    context = ListenerContext(
        ListenerConfig(port=1, service=SERVICE, protocol="thrift"),
        ServiceConfig(name=SERVICE, protocol="thrift"),
        cluster,
    )
    config = ThriftConfig()
    pool = UpstreamPool(config.connect_timeout_s, config.max_message_bytes)
    host = cluster.hosts()[0]
    up_transport = FakeTransport()
    if hasattr(pool, "add"):  # the shared multiplexing pool
        from agent.runtime.multiplex import MultiplexConnection

        kind = (proto, Transport.FRAMED)
        upstream = MultiplexConnection(host, pool.codec(kind), pool.batch)
        upstream.connection_made(up_transport)  # type: ignore[arg-type]
        pool.add(upstream, kind)
    else:  # the checkout before it
        from plugins.thrift.upstream import UpstreamConnection  # type: ignore[attr-defined]

        upstream = UpstreamConnection(host, proto, Transport.FRAMED, config.max_message_bytes)
        upstream.connection_made(up_transport)
        pool._connections[("127.0.0.1", 1, proto, Transport.FRAMED)] = upstream
    proxy = ThriftProxyConnection(context, config, pool)
    client = FakeTransport()
    proxy.connection_made(client)  # type: ignore[arg-type]
    return proxy, upstream, up_transport, client


async def run(calls: int, batch: int, repeat: int, proto: Proto, profile: str | None) -> None:
    proxy, upstream, up_transport, client = make_proxy(proto)
    chunk = b"".join(call_bytes(proto, i + 1) for i in range(batch))
    replies: dict[int, bytes] = {}

    def reply(seqid: int) -> bytes:
        data = replies.get(seqid)
        if data is None:
            data = replies[seqid] = reply_bytes(proto, seqid)
        return data

    async def one_round() -> None:
        proxy.data_received(chunk)
        await asyncio.sleep(0)  # a checkout that flushes with call_soon writes now
        sent = b"".join(up_transport.out)
        up_transport.out.clear()
        upstream.data_received(b"".join(reply(s) for s in seqids(sent, proto)))
        await asyncio.sleep(0)
        client.out.clear()

    async def measure_overhead() -> float:
        start = time.process_time()
        for _ in range(rounds):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.process_time() - start

    rounds = max(1, calls // batch)
    for _ in range(min(rounds, 1000)):  # warm caches
        await one_round()
    overhead = await measure_overhead()
    best = float("inf")
    writes = 0
    profiler = cProfile.Profile() if profile else None
    for _ in range(repeat):
        up_transport.writes = client.writes = 0
        if profiler:
            profiler.enable()
        start = time.process_time()
        for _ in range(rounds):
            await one_round()
        best = min(best, time.process_time() - start)
        if profiler:
            profiler.disable()
        writes = up_transport.writes + client.writes
    if profiler and profile:
        profiler.dump_stats(profile)
    # The bench's own work (seqid scan, reply lookup) is in the figure; the two loop
    # turns per round are taken out.
    per_call = (best - overhead) / (rounds * batch) * 1e6
    print(
        f"{proto.value} batch {batch:>3}: {per_call:6.2f} us/call, "
        f"{writes / (2 * rounds * batch):.3f} writes/message"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, action="append", help="calls per read (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--proto", choices=["binary", "compact"], default="binary")
    parser.add_argument("--root", type=Path, help="checkout whose proxy to measure")
    parser.add_argument("--profile", help="write a cProfile of the measured rounds here")
    args = parser.parse_args(argv)
    for batch in args.batch or [1, 8]:
        uvloop.run(run(args.calls, batch, args.repeat, Proto(args.proto), args.profile))
    print(f"(proxy code from {ROOT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
