"""The call context that travels between agents: deadline, hop count, path, error chain.

One object plugged into the :class:`agent.calls.Calls` hub as both a policy (it reads what
arrived, bounds the deadline and refuses loops before anything is sent) and an observer
(it writes what each attempt sends, and gives a failed call's error its chain).

- **Deadline.** The budget that arrived (``x-meshagent-timeout-ms``, or the protocol's own
  field that the protocol turned into ``timeout_s``) shortens the call's deadline; each
  attempt sends what is left, so every hop subtracts what it spent.
- **Loop protection.** ``x-meshagent-hops`` counts the agents a call went through and
  ``x-meshagent-path`` names their apps; at ``max_hops`` the call is refused with an error
  naming the path (A → B → A → B ... must not snowball).
- **Error chain.** A failed call's error gets ``chain``: the apps it came through and
  this hop (service, method, endpoint, outcome, message), like a cross-process stack; the
  OpenAPI puts it into its problem details and tracing onto the span.

Bad input (an unreadable hop count or budget, a budget of years) is ignored or clamped
and counted in :class:`ContextStats`, never an error to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from mypy_extensions import mypyc_attr

from agent.call_hooks import CallHook
from agent.calls import Attempt, Call, CallRejected
from agent.errors import MeshAgentError
from agent.telemetry import propagation as p

NAME = "context"
_PATHS_MAX = 1024


@dataclass
class ContextStats:
    """Counters read at scrape time."""

    # Header values from outside that were ignored or clamped, by kind.
    invalid: dict[str, int] = field(default_factory=dict)
    loops: int = 0

    def count(self, kind: str) -> None:
        self.invalid[kind] = self.invalid.get(kind, 0) + 1


class Hop(NamedTuple):
    """Where the call has been (a tuple: built once per call, on the hot path)."""

    hops: int
    path: tuple[str, ...]


_FIRST_HOP = Hop(0, ())
# The hop counts sent (hops + 1) as text, made once.
_HOP_COUNTS_MAX = 64
_HOP_COUNTS = tuple(str(n + 1) for n in range(_HOP_COUNTS_MAX))


# Compiled (agent/compiled.py); tests subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class CallContext(CallHook):
    name = NAME

    def __init__(self, max_hops: int = 16, max_timeout_s: float = 300.0) -> None:
        self.max_hops = max_hops
        self.max_timeout_s = max_timeout_s
        self.stats = ContextStats()
        # The outgoing path by incoming path (this agent's app appended), bounded.
        self._paths: dict[tuple[str, ...], str] = {}

    # -- CallPolicy ----------------------------------------------------------------------

    def admit(self, call: Call) -> None:
        incoming = call.incoming
        if not incoming:  # the usual call from an app: first hop, nothing to read
            call.state[NAME] = _FIRST_HOP
            if call.deadline is not None and call.deadline > call.started + self.max_timeout_s:
                self._bound_deadline(call)
            return
        hops = 0
        raw_hops = incoming.get(p.HOPS)
        if raw_hops is not None:
            parsed = p.parse_hops(raw_hops)
            if parsed is None:
                self.stats.count("hops")
            else:
                hops = parsed
        path = p.parse_path(incoming.get(p.PATH, ""))
        call.state[NAME] = Hop(hops, path)
        self._bound_deadline(call)
        if hops >= self.max_hops:
            self.stats.loops += 1
            here = call.hub.app if call.hub is not None and call.hub.app else "this agent"
            route = " → ".join([*path, here, call.route.target])
            raise CallRejected(
                "loop",
                f"loop protection: call to {call.route.target}.{call.route.method} refused "
                f"after {hops} hops (limit {self.max_hops}): {route}",
            )

    def _bound_deadline(self, call: Call) -> None:
        now = call.started
        raw = call.incoming.get(p.TIMEOUT_MS)
        if raw is not None:
            budget_ms = p.parse_timeout_ms(raw)
            if budget_ms is None:
                self.stats.count("timeout")
            else:
                at = now + budget_ms / 1000
                if call.deadline is None or at < call.deadline:
                    call.deadline = at
        latest = now + self.max_timeout_s
        if call.deadline is not None and call.deadline > latest:
            # Years of budget: a unit mix-up upstream. Waiting that long holds a slot.
            self.stats.count("timeout_clamped")
            call.deadline = latest

    # -- CallObserver --------------------------------------------------------------------

    # (No-ops of its own: the base's, interpreted, would run as Python on every call.)
    def call_started(self, call: Call) -> None:
        return None

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        return None

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        hop = call.state.get(NAME)
        if not isinstance(hop, Hop):
            return  # rejected before admit ran, or another hub
        headers = attempt.headers
        headers[p.HOPS] = _HOP_COUNTS[hop.hops] if hop.hops < _HOP_COUNTS_MAX else str(hop.hops + 1)
        path = self._paths.get(hop.path)
        if path is None:
            # Most calls arrive with no path or one of a few: format each once.
            here = call.hub.app if call.hub is not None and call.hub.app else "?"
            path = p.format_path((*hop.path, here[: p.PATH_ENTRY_MAX]))
            if len(self._paths) < _PATHS_MAX:
                self._paths[hop.path] = path
        headers[p.PATH] = path
        remaining = call.remaining_s()
        if remaining is not None:
            headers[p.TIMEOUT_MS] = str(max(1, int(remaining * 1000 + 1e-6)))  # float noise

    def call_finished(self, call: Call) -> None:
        error = call.error
        if isinstance(error, MeshAgentError) and not error.chain:
            error.chain = chain_of(call)


def chain_of(call: Call) -> tuple[dict[str, str], ...]:
    """The apps a failed call came through (oldest first) and this hop, with the error."""
    hop = call.state.get(NAME)
    path = hop.path if isinstance(hop, Hop) else ()
    here: dict[str, str] = {
        "app": call.hub.app if call.hub is not None else "",
        "service": call.route.target,
        "method": call.route.method,
        "protocol": call.protocol,
    }
    if call.attempts:
        here["endpoint"] = call.attempts[-1].endpoint
    if call.outcome is not None:
        here["outcome"] = call.outcome.value
    if call.error is not None:
        here["error"] = str(call.error)[:512]
    return (*({"app": app} for app in path), here)
