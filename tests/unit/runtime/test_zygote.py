import os
import select
import signal
import time

from agent.runtime.zygote import Zygote, parse_event


def next_events(zygote: Zygote, count: int) -> list[tuple[str, int, int]]:
    found: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + 20
    while len(found) < count:
        readable, _, _ = select.select([zygote.events_fd], [], [], deadline - time.monotonic())
        assert readable, f"no event from the zygote; got {found}"
        found.extend(zygote.read_events())
    return found


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def gone(pid: int) -> bool:
    """Wait (bounded) for ``pid`` to exit, through a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 20)
        return bool(readable)
    finally:
        os.close(fd)


def test_workers_are_forked_on_request_and_their_exits_reported() -> None:
    zygote = Zygote.start(lambda number: 40 + number, lambda: None)
    try:
        zygote.spawn(1)
        zygote.spawn(2)
        events = next_events(zygote, 4)
        pids = {first: second for kind, first, second in events if kind == "pid"}
        exits = {first: exit_code(second) for kind, first, second in events if kind == "exit"}
        assert set(pids) == {1, 2}
        assert exits == {pids[1]: 41, pids[2]: 42}
    finally:
        zygote.close()
        assert gone(zygote.pid)
        os.waitpid(zygote.pid, 0)


def test_killing_the_zygote_takes_its_workers() -> None:
    def block(number: int) -> int:
        signal.pause()
        return 0

    zygote = Zygote.start(block, lambda: None)
    zygote.spawn(0)
    (event,) = next_events(zygote, 1)
    assert event[0] == "pid"
    worker = event[2]
    os.kill(zygote.pid, signal.SIGKILL)
    os.waitpid(zygote.pid, 0)
    # PR_SET_PDEATHSIG: the worker is killed with its parent, not orphaned.
    assert gone(worker)
    zygote.close()


def test_event_lines() -> None:
    assert parse_event("pid 3 1234") == ("pid", 3, 1234)
    assert parse_event("exit 1234 9") == ("exit", 1234, 9)
    assert parse_event("exit x 9") is None
    assert parse_event("spawn 1") is None
