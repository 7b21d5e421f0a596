from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from agent.runtime.admission import (
    HEADROOM,
    LOG_EVERY_S,
    BufferBudget,
    ConnectionBudget,
    Refusals,
    default_budget,
    gated,
)


class Counted(asyncio.Protocol):
    """A listener protocol that counts itself in and out, as the listeners' do (track)."""

    lost = asyncio.Event()  # set when any connection closes (reset by the tests)

    def __init__(self, open_set: set[Counted], budget: ConnectionBudget) -> None:
        self.open_set = open_set
        self.budget = budget

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.open_set.add(self)
        self.budget.open += 1
        transport.write(b"hi")  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_set.discard(self)
        self.budget.open -= 1
        Counted.lost.set()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def serve(
    limit: int, budget: ConnectionBudget, refusals: Refusals
) -> tuple[asyncio.Server, set[Counted]]:
    open_set: set[Counted] = set()
    server = await asyncio.get_running_loop().create_server(
        gated(open_set.__len__, limit, budget, refusals, lambda: Counted(open_set, budget)),
        "127.0.0.1",
        0,
    )
    return server, open_set


async def connect(server: asyncio.Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = server.sockets[0].getsockname()[1]
    return await asyncio.open_connection("127.0.0.1", port)


async def admitted(reader: asyncio.StreamReader) -> bool:
    # Admitted connections are greeted; refused ones see the end of the stream at once.
    return await reader.read(2) == b"hi"


async def test_a_listener_over_its_limit_closes_new_connections_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = ConnectionBudget(100)
    clock = Clock()
    refusals = Refusals("tcp:1", clock)
    server, open_set = await serve(2, budget, refusals)
    clients = [await connect(server) for _ in range(2)]
    assert [await admitted(r) for r, _ in clients] == [True, True]
    with caplog.at_level(logging.WARNING):
        extra = [await connect(server) for _ in range(3)]
        assert [await admitted(r) for r, _ in extra] == [False, False, False]
    assert refusals.total == 3 and len(open_set) == 2 and budget.open == 2
    # Three refusals, one log line (the next would come LOG_EVERY_S later), with the count.
    lines = [r for r in caplog.records if r.getMessage().startswith("connection refused")]
    assert len(lines) == 1 and lines[0].__dict__["listener"] == "tcp:1"
    # A slot frees when a connection closes: the next one is admitted.
    Counted.lost = asyncio.Event()
    clients[0][1].close()
    await asyncio.wait_for(Counted.lost.wait(), 5)
    assert len(open_set) == 1
    reader, writer = await connect(server)
    assert await admitted(reader)
    clock.now += LOG_EVERY_S
    for _, w in [*clients[1:], *extra, (reader, writer)]:
        w.close()
    server.close()


async def test_listeners_share_the_agent_budget() -> None:
    budget = ConnectionBudget(3)
    first, _ = await serve(10, budget, Refusals("a"))
    second, _ = await serve(10, budget, Refusals("b"))
    clients = [await connect(first) for _ in range(2)] + [await connect(second)]
    assert all([await admitted(r) for r, _ in clients])
    over = await connect(second)
    assert not await admitted(over[0])
    assert budget.refused == 1 and budget.open == 3
    for _, writer in [*clients, over]:
        writer.close()
    first.close()
    second.close()


def test_the_default_budget_keeps_headroom_and_the_api_share() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert default_budget(reserved=256) == (1024 - HEADROOM - 256) // 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Holder:
    def __init__(self) -> None:
        self.resumed = 0
        self.timed_out = asyncio.Event()

    def resume_buffers(self) -> None:
        self.resumed += 1

    def partial_timed_out(self, held_s: float) -> None:
        self.timed_out.set()


async def test_past_the_buffer_budget_holders_pause_until_others_complete() -> None:
    budget = BufferBudget(limit=100, timeout_s=3600)
    first, second, third = Holder(), Holder(), Holder()
    assert not budget.update(first, 0, 60)
    assert budget.update(second, 0, 60)  # 120 held: the one that went over pauses
    assert budget.update(third, 0, 10)  # still over: every holder that adds pauses
    assert budget.held == 130 and budget.paused_total == 2
    # first's request completes: 70 held, the waiting ones resume, in order.
    assert not budget.update(first, 60, 0)
    assert (second.resumed, third.resumed) == (1, 1)
    # A holder that goes away with its bytes frees them too.
    assert budget.update(first, 0, 50)  # 120 again
    budget.forget(second, 60)
    assert budget.held == 60 and first.resumed == 1


async def test_a_request_arriving_too_long_is_timed_out_by_the_sweep() -> None:
    clock = Clock()
    budget = BufferBudget(limit=1000, timeout_s=5.0, clock=clock)
    slow, done = Holder(), Holder()
    budget.update(slow, 0, 10)
    budget.update(done, 0, 10)
    budget.update(done, 10, 0)  # completed: no longer swept
    clock.now += 6.0  # the sweep (once a second) finds slow's request 6 s old
    await asyncio.wait_for(slow.timed_out.wait(), 5)
    assert budget.timed_out_total == 1 and not done.timed_out.is_set()
