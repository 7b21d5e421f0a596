"""Write coalescing and the per-connection deadline sweep, with fake transports.

A read carrying several requests must leave as one write per provider connection, and a
provider read carrying several answers as one write per client connection, with every
frame in order under the right id. Deadlines are kept by one timer per client connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.codec import NEED_DATA
from agent.config import ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.runtime.protocols import ListenerContext
from plugins.dubbo.body import (
    Invocation,
    decode_result,
    encode_invocation,
    request_frame,
    value_response_frame,
)
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.frame import Frame, FrameDecoder, Status
from plugins.dubbo.proxy import DubboProxyConnection
from plugins.dubbo.upstream import UpstreamConnection, UpstreamPool

SERVICE = "org.example.Echo"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []  # one entry per write()/writelines() call
        self.protocol: Any = None
        self.pause_on_write = False
        self.reading = True
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        if self.pause_on_write:
            self.protocol.pause_writing()

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def get_extra_info(self, _key: str) -> Any:
        return ("127.0.0.1", 1234)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def frames(self) -> list[Frame]:
        decoder = FrameDecoder()
        decoder.receive_data(b"".join(self.writes))
        frames = []
        while (frame := decoder.next_event()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            frames.append(frame)
        return frames


def body(method: str, timeout: str | None = None) -> bytes:
    attachments = {"timeout": timeout} if timeout is not None else {}
    return encode_invocation(Invocation(SERVICE, "", method, (), (), attachments))


class Rig:
    """A proxy connection and ``providers`` upstream connections, all on fake transports."""

    def __init__(self, providers: int = 1) -> None:
        self.cluster = Cluster(SERVICE, RoundRobin())
        self.cluster.apply(
            Reset(1, tuple(Instance(f"p{i}", "127.0.0.1", 1000 + i) for i in range(providers)))
        )
        context = ListenerContext(
            ListenerConfig(port=1, service=SERVICE, protocol="dubbo"),
            ServiceConfig(name=SERVICE, protocol="dubbo"),
            self.cluster,
        )
        self.pool = UpstreamPool()
        self.upstreams: list[UpstreamConnection] = []
        self.up_transports: list[FakeTransport] = []
        for host in self.cluster.hosts():
            upstream = UpstreamConnection(host, self.pool.codec(), self.pool.batch)
            transport = FakeTransport()
            transport.protocol = upstream
            upstream.connection_made(transport)  # type: ignore[arg-type]
            self.pool.add(upstream)
            self.upstreams.append(upstream)
            self.up_transports.append(transport)
        self.proxy = DubboProxyConnection(context, DubboConfig(timeout_ms=1000), self.pool)
        self.client = FakeTransport()
        self.client.protocol = self.proxy
        self.proxy.connection_made(self.client)  # type: ignore[arg-type]


async def test_requests_in_one_read_leave_in_one_write_per_provider_in_order() -> None:
    rig = Rig(providers=2)
    ids = [101, 7, 55, 3, 900, 12]
    rig.proxy.data_received(b"".join(request_frame(i, body(f"m{i}")) for i in ids))

    for transport in rig.up_transports:
        assert len(transport.writes) == 1  # one send per provider for the whole read
    sent = [transport.frames() for transport in rig.up_transports]
    # Round robin over the two providers, order kept on each, fresh ids 1, 2, 3 on each.
    assert [f.header.request_id for f in sent[0]] == [1, 2, 3]
    assert [f.header.request_id for f in sent[1]] == [1, 2, 3]
    by_method = {f.body: (n, f.header.request_id) for n, frames in enumerate(sent) for f in frames}
    assert len(by_method) == 6
    assert [by_method[body(f"m{i}")][0] for i in ids] == [0, 1, 0, 1, 0, 1]

    # Each provider answers all in one read, in reverse order.
    for n, (upstream, frames) in enumerate(zip(rig.upstreams, sent, strict=True)):
        upstream.data_received(
            b"".join(
                value_response_frame(f.header.request_id, f"p{n}:{f.body[-8:]!r}")
                for f in reversed(frames)
            )
        )
    assert len(rig.client.writes) == 2  # one per provider read, not one per answer
    answers = rig.client.frames()
    # Answered in the providers' order, each under the client's own id, with its body.
    expected = [ids[4], ids[2], ids[0], ids[5], ids[3], ids[1]]
    assert [f.header.request_id for f in answers] == expected
    for frame, client_id in zip(answers, expected, strict=True):
        n, _ = by_method[body(f"m{client_id}")]
        assert decode_result(frame.header, frame.body).value == (
            f"p{n}:{body(f'm{client_id}')[-8:]!r}"
        )
    assert not rig.proxy.calls


async def test_answers_and_errors_in_one_read_keep_their_order() -> None:
    rig = Rig()
    bad = encode_invocation(Invocation("org.other.Service", "", "x", (), (), {}))
    rig.proxy.data_received(
        request_frame(1, body("a")) + request_frame(2, bad) + request_frame(3, body("b"))
    )
    # The refusal of request 2 is written with the read's other output: one write.
    assert len(rig.client.writes) == 1
    assert [f.header.request_id for f in rig.client.frames()] == [2]
    assert rig.client.frames()[0].header.status == Status.SERVICE_NOT_FOUND
    assert len(rig.up_transports[0].writes) == 1
    assert len(rig.up_transports[0].frames()) == 2


async def test_provider_backpressure_seen_when_the_batch_is_written() -> None:
    rig = Rig()
    rig.up_transports[0].pause_on_write = True  # over high water once written
    rig.proxy.data_received(request_frame(1, body("a")) + request_frame(2, body("b")))
    assert len(rig.up_transports[0].writes) == 1
    assert not rig.client.reading  # paused until the provider drains
    rig.upstreams[0].resume_writing()
    assert rig.client.reading


async def test_deadlines_expire_in_order_with_one_timer() -> None:
    rig = Rig()
    timers: list[float] = []
    loop = asyncio.get_running_loop()

    class CountingLoop:
        def time(self) -> float:
            return loop.time()

        def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
            timers.append(when)
            return loop.call_at(when, callback)

    rig.proxy.deadlines.loop = CountingLoop()  # type: ignore[assignment]
    frames = [
        request_frame(1, body("slow", "300")),
        request_frame(2, body("fast", "60")),
        request_frame(3, body("answered", "60")),
        request_frame(4, body("slow2", "300")),
    ]
    rig.proxy.data_received(b"".join(frames))
    answered = rig.up_transports[0].frames()[2]
    rig.upstreams[0].data_received(value_response_frame(answered.header.request_id, "ok"))
    assert [f.header.request_id for f in rig.client.frames()] == [3]
    await asyncio.sleep(0.15)
    statuses = [(f.header.request_id, f.header.status) for f in rig.client.frames()]
    assert statuses == [(3, Status.OK), (2, Status.SERVER_TIMEOUT)]
    await asyncio.sleep(0.3)
    statuses = [(f.header.request_id, f.header.status) for f in rig.client.frames()]
    assert statuses[2:] == [(1, Status.SERVER_TIMEOUT), (4, Status.SERVER_TIMEOUT)]
    assert not rig.proxy.calls
    assert len(rig.proxy.deadlines) == 0  # queues emptied, no timer left
    assert not rig.proxy.deadlines.armed
    # Armed for the first 300 ms deadline, re-armed for the earlier 60 ms one, then
    # once more for the 300 ms calls: not one timer per request.
    assert len(timers) == 3


async def test_a_late_answer_after_the_deadline_is_dropped() -> None:
    rig = Rig()
    rig.proxy.data_received(request_frame(9, body("slow", "30")))
    sent = rig.up_transports[0].frames()[0]
    await asyncio.sleep(0.1)
    rig.upstreams[0].data_received(value_response_frame(sent.header.request_id, "late"))
    assert [(f.header.request_id, f.header.status) for f in rig.client.frames()] == [
        (9, Status.SERVER_TIMEOUT)
    ]


async def test_connection_lost_cancels_the_deadline_timer() -> None:
    rig = Rig()
    rig.proxy.data_received(request_frame(1, body("a", "50")))
    assert rig.proxy.deadlines.armed
    rig.proxy.connection_lost(None)
    assert not rig.proxy.deadlines.armed
    await asyncio.sleep(0.1)
    assert rig.client.frames() == []


@pytest.mark.parametrize("count", [1, 3])
async def test_flush_skips_a_closed_client(count: int) -> None:
    rig = Rig()
    rig.proxy.data_received(b"".join(request_frame(i, body("a")) for i in range(count)))
    frames = rig.up_transports[0].frames()
    rig.client.closing = True
    rig.upstreams[0].data_received(
        b"".join(value_response_frame(f.header.request_id, "x") for f in frames)
    )
    assert rig.client.writes == []
