"""The base classes of call observers and call policies (agent/calls.py calls them), and
the error a policy refuses a call with.

A module of its own, interpreted: agent/calls.py is compiled by mypyc, and these classes
are subclassed by interpreted code (tests, plugins), which compiled classes would refuse
(mypyc's methods check ``self`` by exact type). GovernancePolicy and CallContext, a policy
and an observer at once and compiled, derive from :class:`CallHook` (one base).
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING

from agent.errors import MeshAgentError

if TYPE_CHECKING:
    from agent.calls import Attempt, Call


class CallObserver(ABC):  # noqa: B024 - every hook is optional
    """Told about every call; must not raise and must not block (it runs on the hot path)."""

    name = "observer"

    def call_started(self, call: Call) -> None:
        return None

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        return None

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        return None

    def call_finished(self, call: Call) -> None:
        return None


class CallPolicy(ABC):  # noqa: B024 - every hook is optional
    """Consulted when a call starts, before anything is sent.

    ``admit`` may raise :class:`CallRejected` (the protocol answers with its own overload
    or fault error), shorten ``call.deadline``, or leave state on the call for the
    protocol path to read (the rule in force: retries, subsets).
    """

    name = "policy"

    def admit(self, call: Call) -> None:
        return None


class CallHook(CallPolicy, CallObserver):
    """A policy and an observer at once, as one base: the classes that are both
    (GovernancePolicy, CallContext) are compiled, and mypyc compiles single inheritance
    only (a native class may have one non-native base)."""

    name = "hook"


class CallRejected(MeshAgentError):
    """A policy refused the call before it was sent; protocols answer with their own error.

    ``reason`` is a short word for counters and the protocol's mapping: ``rate_limited``
    (HTTP 429, gRPC RESOURCE_EXHAUSTED, Dubbo SERVER_THREADPOOL_EXHAUSTED_ERROR),
    ``overloaded`` (circuit breaking), ``fault`` (an injected abort), ``loop`` (too many
    hops). ``status`` optionally pins the protocol status to answer with (an injected
    abort names one).
    """

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status

    def http_status(self) -> int:
        """The HTTP status to answer with (the OpenAPI, the HTTP listener): the policy's own
        when it names an HTTP error status (a fault or degrade rule's status may be another
        protocol's: Dubbo's 80), else by reason."""
        if self.status is not None and 400 <= self.status <= 599:
            return self.status
        return _REJECTED_HTTP_STATUS.get(self.reason, 503)


_REJECTED_HTTP_STATUS = {"rate_limited": 429, "loop": 508, "overloaded": 503, "fault": 503}
