"""The base classes of call observers and call policies (agent/calls.py calls them).

A module of its own, interpreted: agent/calls.py is compiled by mypyc, and these classes
are subclassed by interpreted code, twice over by GovernancePolicy and CallContext (a
policy and an observer at once), which compiled classes cannot allow (mypyc's classes
have fixed layouts, and its methods check ``self`` by exact type).
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING

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
