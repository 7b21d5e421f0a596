"""The supervisor's side of the stream, with the test as the worker (the real worker's
side is tests/unit/runtime/test_worker.py; both as processes: tests/integration/workers)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.discovery.types import Add, Instance, frozen_mapping
from agent.governance.rules import RuleSet
from agent.runtime.agent import Agent, Role
from agent.runtime.heartbeat import Heartbeats
from agent.runtime.mesh_stream import (
    MAX_LINE,
    decode,
    encode,
    host_states_from_json,
    update_from_json,
)
from agent.runtime.supervisor import Supervisor, WorkerStartError
from agent.telemetry.exposition import Registry, render


class Zygote:
    """Stands in for the fork server (our own part, tested in test_zygote.py): records
    which workers were asked for."""

    def __init__(self) -> None:
        self.spawned: list[int] = []
        self.asked = asyncio.Event()
        self.events_fd, self._write = os.pipe()
        self.events: list[tuple[str, int, int]] = []

    def spawn(self, worker: int) -> None:
        self.spawned.append(worker)
        self.asked.set()

    async def wait_spawns(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.spawned) < count:
                self.asked.clear()
                await self.asked.wait()

    def read_events(self) -> Iterator[tuple[str, int, int]]:
        os.read(self.events_fd, 4096)
        events, self.events = self.events, []
        yield from events

    def emit(self, *event: Any) -> None:
        self.events.append(event)  # type: ignore[arg-type]
        os.write(self._write, b"x")

    def close(self) -> None:
        os.close(self.events_fd)
        os.close(self._write)


CONFIG = {
    "registries": [
        {
            "name": "local",
            "type": "local",
            "config": {"services": {"svc": [{"host": "127.0.0.1", "port": 1}]}},
        }
    ],
    "services": [
        {
            "name": "svc",
            "registry": "local",
            "protocol": "tcp",
            "outlier": {"consecutive_failures": 3, "max_ejection_percent": 100},
        }
    ],
}


class FakeWorker:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.snapshot: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(encode(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            return decode(await self.reader.readline())

    async def receive_type(self, kind: str) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if message["t"] == kind:
                return message


OPEN: list[asyncio.StreamWriter] = []


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, Zygote, Agent, str]]:
    agent = Agent(parse_config(CONFIG), Role.SUPERVISOR)
    zygote = Zygote()
    path = str(tmp_path / "mesh.sock")
    supervisor = Supervisor(agent, 1, zygote, path, 5, Heartbeats(1))  # type: ignore[arg-type]
    await agent.start()
    yield supervisor, zygote, agent, path
    for writer in OPEN:
        writer.close()
        await writer.wait_closed()
    OPEN.clear()
    await supervisor.stop()
    await agent.stop()


async def connect(path: str, worker: str = "0") -> FakeWorker:
    reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
    OPEN.append(writer)
    fake = FakeWorker(reader, writer)
    fake.send({"t": "hello", "worker": worker, "pid": 4242})
    return fake


async def start(supervisor: Supervisor, path: str) -> FakeWorker:
    starting = asyncio.ensure_future(supervisor.start())
    # Workers are forked once the stream's socket listens.
    await supervisor.zygote.wait_spawns(1)  # type: ignore[attr-defined]
    worker = await connect(path)
    snapshot = [await worker.receive()]
    while snapshot[-1]["t"] != "ready":
        snapshot.append(await worker.receive())
    worker.send({"t": "listening"})
    await starting
    worker.snapshot = snapshot
    return worker


async def test_snapshot_then_every_update_in_order(running: Any) -> None:
    supervisor, zygote, agent, path = running
    worker = await start(supervisor, path)
    assert zygote.spawned == [0]
    kinds = [m["t"] for m in worker.snapshot]
    assert kinds == ["update", "hosts", "ready"]
    reset = update_from_json(worker.snapshot[0]["u"])
    assert [i.id for i in reset.instances] == ["127.0.0.1:1"]  # type: ignore[union-attr]
    # A discovery update reaches the worker as the registry's own Add.
    cluster = agent.clusters["svc"]
    added = Add(99, Instance("127.0.0.1:2", "127.0.0.1", 2, 100, frozen_mapping(), 99))
    cluster.apply(added)
    supervisor.cluster_update(cluster, added)
    message = await worker.receive_type("update")
    assert update_from_json(message["u"]) == added
    states = host_states_from_json((await worker.receive_type("hosts"))["h"])
    assert states == {"127.0.0.1:2": (True, 0.0, False)}


async def test_failures_from_workers_eject_once_for_all(running: Any) -> None:
    supervisor, _, agent, path = running
    worker = await start(supervisor, path)
    worker.send({"t": "fail", "c": "svc", "e": "127.0.0.1:1"})
    # The streak opens: workers now report this endpoint's successes.
    assert host_states_from_json((await worker.receive_type("hosts"))["h"]) == {
        "127.0.0.1:1": (True, 0.0, True)
    }
    worker.send({"t": "fail", "c": "svc", "e": "127.0.0.1:1"})
    worker.send({"t": "fail", "c": "svc", "e": "127.0.0.1:1"})
    message = await worker.receive_type("hosts")
    healthy, ejected_until, _ = host_states_from_json(message["h"])["127.0.0.1:1"]
    assert healthy and ejected_until > 0
    host = agent.clusters["svc"].get("127.0.0.1:1")
    assert host.stats.ejections == 1
    # The worker counted the requests; the supervisor does not count them again.
    assert host.stats.requests == 0 and host.stats.failures == 0


async def test_a_success_closes_the_streak(running: Any) -> None:
    supervisor, _, _, path = running
    worker = await start(supervisor, path)
    worker.send({"t": "fail", "c": "svc", "e": "127.0.0.1:1"})
    await worker.receive_type("hosts")
    worker.send({"t": "ok", "c": "svc", "e": "127.0.0.1:1"})
    message = await worker.receive_type("hosts")
    assert host_states_from_json(message["h"]) == {"127.0.0.1:1": (True, 0.0, False)}


async def test_rules_reach_workers_and_new_workers_get_them_in_the_snapshot(
    running: Any,
) -> None:
    supervisor, _, agent, path = running
    worker = await start(supervisor, path)
    rules = RuleSet.model_validate({"rules": [{"match": {"to": "svc"}, "timeout_ms": 250}]})
    agent.governance.set_rules(rules, "test-key", None)
    supervisor.rules(rules)
    message = await worker.receive_type("rules")
    assert RuleSet.model_validate(message["rules"]) == rules
    late = await connect(path)
    snapshot = [await late.receive()]
    while snapshot[-1]["t"] != "ready":
        snapshot.append(await late.receive())
    assert [m["t"] for m in snapshot] == ["update", "hosts", "rules", "ready"]


async def test_metrics_are_asked_of_each_serving_worker(running: Any) -> None:
    supervisor, _, _, path = running
    worker = await start(supervisor, path)
    family = ["meshagent_calls", "Calls", "counter", [["meshagent_calls_total", {}, 4]]]
    failed = [1.5, "tcp", "outbound", "app", "svc", "", "error", "", "refused", [{"at": "a"}]]
    # The first request is the status page's reading at start-up; then the scrape's.
    first = await worker.receive_type("window")
    worker.send({"t": "metrics", "n": first["n"], "families": [family], "failures": [failed]})
    asking = asyncio.ensure_future(supervisor.worker_metrics())
    request = await worker.receive_type("metrics")
    worker.send({"t": "metrics", "n": request["n"], "families": [family], "failures": [failed]})
    found = await asking
    assert [m.name for m in found["0"]] == ["meshagent_calls"]
    assert found["0"][0].samples[0].value == 4
    # The merged scrape sums the worker's counter with the supervisor's own (none here).
    text = (await asyncio.gather(supervisor.render_metrics(), answer(worker, family)))[0]
    assert b"meshagent_calls_total 4.0" in text
    assert b'meshagent_workers{state="serving"} 1.0' in text
    # The status page's failed calls include the worker's.
    await asyncio.gather(supervisor._refresh_window(), answer(worker, family, [failed], "window"))
    # The window's reading: the worker's call counter (the supervisor made no call).
    _, reading = supervisor.agent.call_window.readings[-1]
    assert reading == {("meshagent_calls_total", ()): 4.0}
    shown = list(supervisor.agent.recent_failures.calls)
    assert [(c.target, c.error, c.chain) for c in shown] == [("svc", "refused", ({"at": "a"},))]


async def answer(
    worker: FakeWorker,
    family: list[Any],
    failures: list[Any] = [],  # noqa: B006
    kind: str = "metrics",
) -> None:
    request = await worker.receive_type(kind)
    worker.send({"t": "metrics", "n": request["n"], "families": [family], "failures": failures})


async def test_a_worker_exit_is_restarted_and_counted(running: Any) -> None:
    supervisor, zygote, agent, path = running
    await start(supervisor, path)
    zygote.emit("pid", 0, 4242)
    zygote.emit("exit", 4242, 9)  # killed by SIGKILL
    await zygote.wait_spawns(2)
    assert zygote.spawned == [0, 0]
    assert supervisor.restarts["exit"] == 1
    assert agent.ready()[1] == ["worker 0 is not serving"]


async def test_a_worker_exit_before_serving_fails_startup(running: Any) -> None:
    supervisor, zygote, _, _ = running
    starting = asyncio.ensure_future(supervisor.start())
    await zygote.wait_spawns(1)
    zygote.emit("pid", 0, 4343)
    zygote.emit("exit", 4343, 2 << 8)  # exit status 2
    with pytest.raises(WorkerStartError, match="worker 0 exited before serving"):
        await starting


async def test_junk_from_a_worker_closes_only_its_stream(running: Any) -> None:
    supervisor, _, agent, path = running
    worker = await start(supervisor, path)
    reader, writer = await asyncio.open_unix_connection(path)
    OPEN.append(writer)
    writer.write(b"\x00\xffjunk\n")
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed by the supervisor
    kept = supervisor.workers[0].writer
    assert kept is not None and not kept.is_closing()
    worker.send({"t": "readiness", "ready": False, "why": ["app down"]})
    # A metrics round trip: the stream is in order, so the readiness line is read by then.
    asking = asyncio.ensure_future(supervisor.worker_metrics())
    request = await worker.receive_type("metrics")
    worker.send({"t": "metrics", "n": request["n"], "families": []})
    await asking
    assert agent.ready()[1] == ["worker 0: app down"]


async def test_a_worker_whose_heartbeat_stops_is_killed(tmp_path: Path) -> None:
    agent = Agent(parse_config(CONFIG), Role.SUPERVISOR)
    zygote = Zygote()
    path = str(tmp_path / "mesh.sock")
    heartbeats = Heartbeats(1)
    supervisor = Supervisor(agent, 1, zygote, path, 0.2, heartbeats)  # type: ignore[arg-type]
    await agent.start()
    # A process that stands for a worker whose loop never beats.
    wedged = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        await start(supervisor, path)
        zygote.emit("pid", 0, wedged.pid)
        # Nothing beats: past watchdog_s the process is killed (SIGKILL), once.
        async with asyncio.timeout(10):
            assert await wedged.wait() == -9
        assert supervisor.restarts["watchdog"] == 1
    finally:
        for writer in OPEN:
            writer.close()
        OPEN.clear()
        if wedged.returncode is None:
            wedged.kill()
            await wedged.wait()
        await supervisor.stop()
        await agent.stop()


async def test_shares_follow_the_workers_calls(tmp_path: Path) -> None:
    agent = Agent(parse_config(CONFIG), Role.SUPERVISOR)
    zygote = Zygote()
    path = str(tmp_path / "mesh.sock")
    supervisor = Supervisor(agent, 2, zygote, path, 5, Heartbeats(2))  # type: ignore[arg-type]
    await agent.start()
    try:
        starting = asyncio.ensure_future(supervisor.start())
        await zygote.wait_spawns(2)
        workers = [await connect(path, str(n)) for n in (0, 1)]
        for worker in workers:
            await worker.receive_type("ready")
            worker.send({"t": "listening"})
        await starting
        rules = RuleSet.model_validate(
            {"rules": [{"match": {"to": "svc"}, "rate_limit": {"per_s": 100}}]}
        )
        supervisor.rules(rules)
        generation = (await workers[0].receive_type("rules"))["g"]
        assert (await workers[1].receive_type("rules"))["g"] == generation
        # Worker 0 has all the calls: it gets all but worker 1's floor, each is told.
        workers[0].send({"t": "demand", "g": generation, "d": {"0": 500}})
        mine = await workers[0].receive_type("shares")
        theirs = await workers[1].receive_type("shares")
        assert mine["g"] == theirs["g"] == generation
        assert mine["s"]["0"] == pytest.approx(0.95) and theirs["s"]["0"] == pytest.approx(0.05)
        registry = Registry()
        registry.register(supervisor)
        scrape = render(registry).decode()
        assert 'meshagent_governance_share{rule="0",worker="0"} 0.95' in scrape
        # A report about the rules before is stale: no shares come of it.
        workers[1].send({"t": "demand", "g": generation - 1, "d": {"0": 500}})
        workers[1].send({"t": "demand", "g": generation, "d": {"0": 500}})
        assert (await workers[1].receive_type("shares"))["s"]["0"] == pytest.approx(0.5)
    finally:
        for writer in OPEN:
            writer.close()
        OPEN.clear()
        await supervisor.stop()
        await agent.stop()
