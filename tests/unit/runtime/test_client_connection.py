from __future__ import annotations

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.runtime.client_connection import BatchedClientConnection
from agent.runtime.protocols import ListenerContext
from agent.runtime.writebatch import WriteBatch


class Transport:
    def __init__(self) -> None:
        self.sends: list[list[bytes]] = []
        self.closing = False

    def get_extra_info(self, name: str) -> object:
        return ("10.0.0.9", 4321) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.sends.append([data])

    def writelines(self, data: list[bytes]) -> None:
        self.sends.append(list(data))

    def is_closing(self) -> bool:
        return self.closing


def connection() -> tuple[BatchedClientConnection, Transport, WriteBatch]:
    context = ListenerContext(
        ListenerConfig(port=1, service="svc", protocol="dubbo"),
        ServiceConfig(name="svc"),
        Cluster("svc", RoundRobin()),
    )
    batch = WriteBatch()
    client = BatchedClientConnection(context, batch)
    transport = Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    return client, transport, batch


def test_accepting_counts_and_tracks_the_connection() -> None:
    client, _, _ = connection()
    stats = client.context.stats
    assert (stats.accepted, stats.active, client.peer) == (1, 1, "10.0.0.9:4321")
    assert not client.context.idle.is_set()


def test_writes_inside_a_read_go_out_in_one_send_at_its_end() -> None:
    client, transport, batch = connection()
    batch.active = True
    client.write(b"a")
    client.write(b"bc")
    assert transport.sends == []
    batch.finish()
    assert transport.sends == [[b"a", b"bc"]]
    assert client.context.stats.bytes_out == 3
    client.write(b"d")  # outside a read: straight to the transport
    assert transport.sends[-1] == [b"d"]


def test_nothing_is_written_after_the_connection_is_lost() -> None:
    client, transport, batch = connection()
    batch.active = True
    client.write(b"queued")
    client.lost = True
    batch.finish()
    client.write(b"late")
    assert transport.sends == []


def test_a_closing_transport_drops_the_queue() -> None:
    client, transport, batch = connection()
    batch.active = True
    client.write(b"x")
    transport.closing = True
    batch.finish()
    assert transport.sends == []
