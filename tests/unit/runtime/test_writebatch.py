"""WriteBatch: frames queued during a read leave in one write per connection, in order."""

from __future__ import annotations

from agent.runtime.writebatch import WriteBatch, write_all


class Sink:
    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        self.out: list[bytes] = []
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.batch.active:
            if not self.out:
                self.batch.dirty.append(self)
            self.out.append(data)
        else:
            self.writes.append(data)

    def flush(self) -> None:
        out, self.out = self.out, []
        self.writes.append(b"".join(out))


class Transport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, chunks: list[bytes]) -> None:
        self.calls.append(("writelines", b"".join(chunks)))


def test_one_write_per_connection_at_the_end_of_the_batch() -> None:
    batch = WriteBatch()
    a, b = Sink(batch), Sink(batch)
    batch.active = True
    for n in range(3):
        a.write(b"a%d" % n)
        b.write(b"b%d" % n)
    assert a.writes == b.writes == []
    batch.finish()
    assert a.writes == [b"a0a1a2"] and b.writes == [b"b0b1b2"]
    assert not batch.active and batch.dirty == []
    a.write(b"direct")  # outside a batch: straight through
    assert a.writes[-1] == b"direct"


def test_write_all_uses_one_call() -> None:
    transport = Transport()
    write_all(transport, [b"one"])  # type: ignore[arg-type]
    write_all(transport, [b"a", b"b"])  # type: ignore[arg-type]
    assert transport.calls == [("write", b"one"), ("writelines", b"ab")]
