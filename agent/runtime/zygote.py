"""Worker processes forked from a process with no threads and no event loop.

The supervisor runs registries (kazoo and the Nacos SDK start threads), an event loop and
exporters: forking it later would copy locks held by other threads and a live loop into
the child. So before any of that starts, it forks this small process once; the zygote
waits for "spawn" commands on a pipe and forks each worker from its own clean state, which
also shares the imported modules' pages with every worker (copy-on-write: a worker costs
what it allocates, not a new interpreter). It reports each worker's pid and exit status.

No orphans: the zygote and every worker ask the kernel for SIGKILL when their parent dies
(``PR_SET_PDEATHSIG``), so a supervisor killed takes the zygote, and the zygote takes the
workers (docs/workers.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` exits (Linux); exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG refused", extra={"errno": ctypes.get_errno()})
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def parse_event(line: str) -> tuple[str, int, int] | None:
    """``pid WORKER PID`` or ``exit PID STATUS`` (waitpid's status) -> (kind, a, b)."""
    fields = line.split()
    if len(fields) != 3 or fields[0] not in ("pid", "exit"):
        return None
    try:
        return fields[0], int(fields[1]), int(fields[2])
    except ValueError:
        return None


class Zygote:
    """The supervisor's handle: ``spawn`` asks for a worker; ``events_fd`` is readable
    when there is a line to ``read_events``."""

    def __init__(self, pid: int, commands: int, events: int) -> None:
        self.pid = pid
        self._commands = commands
        self.events_fd = events
        self._pending = b""

    @classmethod
    def start(cls, run_worker: Callable[[int], int], release: Callable[[], None]) -> Zygote:
        """Fork the zygote. ``run_worker(worker)`` runs in each worker and returns its exit
        status; ``release()`` runs first in the zygote (what it must not keep open)."""
        commands_r, commands_w = os.pipe()
        events_r, events_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(commands_w)
                os.close(events_r)
                release()
                die_with_parent(parent)
                status = _serve(commands_r, events_w, run_worker)
            finally:
                os._exit(status)
        os.close(commands_r)
        os.close(events_w)
        os.set_blocking(events_r, False)
        return cls(pid, commands_w, events_r)

    def spawn(self, worker: int) -> None:
        os.write(self._commands, f"spawn {worker}\n".encode())

    def read_events(self) -> Iterator[tuple[str, int, int]]:
        try:
            chunk = os.read(self.events_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            yield ("gone", self.pid, 0)
            return
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            event = parse_event(line.decode("ascii", "replace"))
            if event is not None:
                yield event

    def close(self) -> None:
        """No more workers: the zygote exits once its pipe closes."""
        os.close(self._commands)
        os.close(self.events_fd)


def _serve(commands: int, events: int, run_worker: Callable[[int], int]) -> int:
    # The supervisor coordinates signals (a Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    me = os.getpid()
    selector = selectors.DefaultSelector()
    selector.register(commands, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                _reap(events)
                continue
            chunk = os.read(commands, 4096)
            if not chunk:
                return 0  # the supervisor is done (or gone: then PDEATHSIG came first)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                fields = line.split()
                if len(fields) != 2 or fields[0] != b"spawn" or not fields[1].isdigit():
                    continue
                worker = int(fields[1])
                pid = os.fork()
                if pid == 0:
                    status = 1
                    try:
                        signal.set_wakeup_fd(-1)
                        for fd in (commands, events, wake_r, wake_w):
                            os.close(fd)
                        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                            signal.signal(signum, signal.SIG_DFL)
                        die_with_parent(me)
                        status = run_worker(worker)
                    finally:
                        os._exit(status)
                os.write(events, f"pid {worker} {pid}\n".encode())


def _reap(events: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        os.write(events, f"exit {pid} {status}\n".encode())
