"""The protocol-agnostic multiplexing pool, with a toy line protocol against a real process.

The upstream is tests/fixtures/tcp_upstream.py (its own process): it answers every line
with ``NAME:line``. The toy protocol writes a request as ``<id> <payload>\\n``, so each
answer carries the id of the request it answers, as Dubbo's and Thrift's do. A line that is
not ``NAME:<id> ...`` is an event of the provider's own (``drain``) or, if unreadable, a
malformed message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

from agent.cluster.host import Host
from agent.codec import NEED_DATA, NeedData
from agent.discovery.types import Instance
from agent.errors import ConnectError, RemoteProtocolError, UpstreamError, UpstreamTimeout
from agent.runtime.multiplex import (
    MultiplexCodec,
    MultiplexConnection,
    MultiplexPool,
    ResponseDecoder,
)
from tests.fixtures.net import async_wait_until
from tests.fixtures.processes import free_port
from tests.fixtures.upstreams import Upstream

Answer = tuple[int | None, str]


class ToyLost(UpstreamError):
    """The toy protocol's own error for a lost connection."""


class LineDecoder:
    def __init__(self) -> None:
        self.buffer = b""

    def receive_data(self, data: bytes) -> None:
        self.buffer += data

    def next_event(self) -> Answer | NeedData:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return NEED_DATA
        self.buffer = rest
        _name, _, text = line.decode().partition(":")
        if text == "drain":
            return None, text
        head, _, payload = text.partition(" ")
        if not head.isdigit():
            raise RemoteProtocolError(f"unreadable answer {text!r}")
        return int(head), payload


class ToyCodec(MultiplexCodec[str, Answer]):
    max_id = 5  # small, so the wrap-around is exercised

    def __init__(self) -> None:
        self.events: list[str] = []

    def decoder(self) -> ResponseDecoder[Answer]:
        return LineDecoder()

    def encode(self, request: str, request_id: int) -> bytes:
        return f"{request_id} {request}\n".encode()

    def response_id(self, response: Answer) -> int | None:
        return response[0]

    def on_message(self, connection: MultiplexConnection[str, Answer], message: Answer) -> None:
        self.events.append(message[1])
        connection.drain()

    def keepalive(self, request_id: int) -> bytes:
        return f"{request_id} keepalive\n".encode()

    def lost(self, reason: str) -> UpstreamError:
        return ToyLost(reason)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    server = Upstream("u", Path(tmp_path_factory.mktemp("multiplex"))).start()
    yield server
    server.stop()


def host_of(upstream: Upstream) -> Host:
    return Host(Instance(upstream.endpoint, "127.0.0.1", upstream.port))


def pool_of(codec: ToyCodec | None = None, **settings: object) -> MultiplexPool[str, Answer]:
    toy = codec or ToyCodec()

    def codec_for(_kind: Hashable) -> ToyCodec:
        return toy

    return MultiplexPool(codec_for, **settings)  # type: ignore[arg-type]


async def test_answers_reach_their_callers_over_one_connection(upstream: Upstream) -> None:
    pool = pool_of()
    host = host_of(upstream)
    try:
        connections = await asyncio.gather(*(pool.get(host) for _ in range(5)))
        assert len({id(c) for c in connections}) == 1  # one shared connect attempt
        connection = connections[0]
        answers = []
        for group in range(3):
            answers += await asyncio.gather(
                *(connection.request(f"m{group}.{i}", 5) for i in range(4))
            )
        # Ids wrap at max_id (5) back to 1; every caller still gets its own answer.
        assert [payload for _id, payload in answers] == [
            f"m{g}.{i}" for g in range(3) for i in range(4)
        ]
        assert [i for i, _ in answers] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
        assert not connection.pending
        assert len(pool.connections()) == 1
    finally:
        await pool.close()


async def test_wrapped_ids_skip_those_still_in_flight(upstream: Upstream) -> None:
    pool = pool_of()
    try:
        connection = await pool.get(host_of(upstream))
        upstream.process.freeze()
        try:
            held = asyncio.ensure_future(connection.request("held", 5))  # id 1, unanswered
            await async_wait_until(lambda: connection.pending, within=5)
            ids = [connection.send(f"s{n}", lambda _o: None) for n in range(4)]
            assert ids == [2, 3, 4, 5]
            with pytest.raises(UpstreamError, match="all 5 request ids"):
                connection.send("one too many", lambda _o: None)
            for request_id in ids[1:]:
                connection.cancel(request_id)
            # 1 and 2 are in flight: the id after 5 is 3, not 1.
            assert connection.send("wrapped", lambda _o: None) == 3
        finally:
            upstream.process.thaw()
        assert (await held) == (1, "held")
    finally:
        await pool.close()


async def test_send_calls_the_waiter_and_cancel_drops_a_late_answer(upstream: Upstream) -> None:
    pool = pool_of()
    try:
        connection = await pool.get(host_of(upstream))
        got: list[object] = []
        done = asyncio.Event()

        def waiter(outcome: Answer | UpstreamError) -> None:
            got.append(outcome)
            done.set()

        connection.send("a", waiter)
        cancelled = connection.send("b", got.append)
        connection.cancel(cancelled)
        await asyncio.wait_for(done.wait(), 5)
        await connection.request("c", 5)  # answered after b: b's answer was read and dropped
        assert got == [(1, "a")]
    finally:
        await pool.close()


async def test_a_frozen_provider_times_out_and_its_late_answer_is_dropped(
    upstream: Upstream,
) -> None:
    pool = pool_of()
    try:
        connection = await pool.get(host_of(upstream))
        upstream.process.freeze()
        try:
            with pytest.raises(UpstreamTimeout, match="did not answer within 200 ms"):
                await connection.request("slow", 0.2)
            assert not connection.pending
        finally:
            upstream.process.thaw()
        # The late answer to "slow" arrives first and matches nobody; the next call works.
        assert (await connection.request("next", 5))[1] == "next"
    finally:
        await pool.close()


async def test_lost_connection_fails_every_waiter_with_the_protocols_error(
    tmp_path: Path,
) -> None:
    server = Upstream("lost", tmp_path).start()
    pool = pool_of()
    try:
        host = host_of(server)
        connection = await pool.get(host)
        server.process.freeze()
        calls = [asyncio.ensure_future(connection.request(f"x{i}", 10)) for i in range(3)]
        await async_wait_until(lambda: len(connection.pending) == 3, within=5)
        server.kill()  # SIGKILL works on a stopped process: the kernel resets the socket
        for call in calls:
            with pytest.raises(ToyLost, match="lost"):
                await call
        assert connection.closed and not pool.usable(host)
        with pytest.raises(ToyLost):
            connection.send("after", lambda _o: None)
        with pytest.raises(ConnectError):
            await pool.get(host)  # nobody listens any more
    finally:
        server.stop()
        await pool.close()


async def test_malformed_answer_fails_the_connection_and_the_next_get_reconnects(
    upstream: Upstream,
) -> None:
    pool = pool_of()
    host = host_of(upstream)
    try:
        first = await pool.get(host)
        # The server answers "u:1 x", then "u:garbage" (unreadable), then "u:2 y".
        answered = asyncio.ensure_future(first.request("x\ngarbage", 5))
        waiting = asyncio.ensure_future(first.request("y", 5))
        assert (await answered) == (1, "x")
        with pytest.raises(ToyLost, match="malformed message from provider"):
            await waiting
        assert first.closed and not pool.usable(host)
        second = await pool.get(host)
        assert second is not first
        assert (await second.request("ok", 5))[1] == "ok"
    finally:
        await pool.close()


async def test_a_provider_event_drains_the_connection(upstream: Upstream) -> None:
    codec = ToyCodec()
    pool = pool_of(codec)
    host = host_of(upstream)
    try:
        first = await pool.get(host)
        # The answer comes first, then the provider's own "drain" event.
        assert (await first.request("x\ndrain", 5))[1] == "x"
        await async_wait_until(lambda: first.draining, within=5)
        assert codec.events == ["drain"]
        assert pool.live(host) is None  # no new requests on a draining connection
        second = await pool.get(host)
        assert second is not first and not second.draining
        assert len(pool.connections()) == 2  # the draining one stays open until it closes
    finally:
        await pool.close()


async def test_more_connections_per_endpoint_grow_on_demand_least_pending(
    upstream: Upstream,
) -> None:
    pool = pool_of(connections_per_endpoint=2)
    host = host_of(upstream)
    try:
        first = await pool.get(host)
        assert pool.live(host) is first  # idle: no need for another
        upstream.process.freeze()
        try:
            busy = asyncio.ensure_future(first.request("held", 5))
            await async_wait_until(lambda: first.pending, within=5)
            # Every open connection is busy and the endpoint may grow: a new one.
            assert pool.live(host) is None
            second = await pool.get(host)
            assert second is not first
            assert pool.usable(host) == [first, second]
            # At the maximum, least pending: the idle second one.
            assert pool.live(host) is second
            also_held = asyncio.ensure_future(second.request("held2", 5))
            await async_wait_until(lambda: second.pending, within=5)
            third_call = asyncio.ensure_future(second.request("held3", 5))
            await async_wait_until(lambda: len(second.pending) == 2, within=5)
            assert pool.live(host) is first  # 1 pending against 2
        finally:
            upstream.process.thaw()
        answers = await asyncio.gather(busy, also_held, third_call)
        assert [a[1] for a in answers] == ["held", "held2", "held3"]
        assert len(pool.connections()) == 2
    finally:
        await pool.close()


async def test_round_robin_over_the_endpoint_connections(upstream: Upstream) -> None:
    pool = pool_of(connections_per_endpoint=3, pick="round_robin")
    host = host_of(upstream)
    try:
        made = []
        upstream.process.freeze()
        try:
            for n in range(3):
                connection = await pool.get(host)
                made.append(connection)
                connection.send(f"hold{n}", lambda _o: None)  # busy: the next get grows
        finally:
            upstream.process.thaw()
        assert len({id(c) for c in made}) == 3
        picks = [pool.live(host) for _ in range(6)]
        assert picks == [made[1], made[2], made[0], made[1], made[2], made[0]]
    finally:
        await pool.close()


async def test_an_idle_connection_sends_keepalives(upstream: Upstream) -> None:
    pool = pool_of(keepalive_s=0.1)
    try:
        connection = await pool.get(host_of(upstream))
        first_read = connection.last_read
        # Only the keep-alive's answer can move last_read: nothing else is sent.
        await async_wait_until(lambda: connection.last_read > first_read, within=5)
        assert not connection.pending
    finally:
        await pool.close()


async def test_connect_errors_and_an_unusable_setting() -> None:
    pool = pool_of(connect_timeout_s=1.0)
    dead = Host(Instance("dead", "127.0.0.1", free_port()))
    with pytest.raises(ConnectError, match="failed"):
        await pool.get(dead)
    assert pool.live(dead) is None
    with pytest.raises(ValueError, match="at least 1"):
        pool_of(connections_per_endpoint=0)
    await pool.close()
