"""The governance rule document: what an operator writes (static config or config source).

A rule set is validated whole (pydantic, unknown fields rejected); an invalid one is
refused with one ``path: message`` line per error and never partly applied. Cross-field
checks (weights that add up, subsets a match names, duplicate matches) are done here so
that a compiled rule set (``agent.governance.table``) can trust its input.

Example::

    circuit_breakers:
      org.acme.Orders: {max_in_flight: 200, max_pending: 50}
    rules:
      - match: {to: org.acme.Orders, method: create}
        timeout_ms: 800
        rate_limit: {per_s: 100, burst: 20}
        retry: {attempts: 2, retry_on: [connect_failure, retryable_status], budget: {ratio: 0.2}}
        traffic:
          subsets:
            - {name: stable, labels: {version: "1.0"}, weight: 90}
            - {name: canary, labels: {version: "1.1"}, weight: 10}
          matches: [{headers: {x-canary: {exact: "1"}}, subset: canary}]
          zone_preference: true
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

WILDCARD = "*"
# A rule set this large is a mistake (or an attack through the config source); the index
# itself would serve more.
MAX_RULES = 50_000
# Python's regex engine backtracks: long patterns and long subjects are where it hurts.
MAX_REGEX_CHARS = 512
MAX_HEADER_VALUE_CHARS = 4096

Name = Annotated[str, Field(min_length=1, max_length=256)]
Percent = Annotated[float, Field(ge=0, le=100)]


def _invalid(message: str) -> PydanticCustomError:
    # Not ValueError: pydantic would prefix "Value error, " to a message that already
    # says what is wrong, with its own path inside the model.
    return PydanticCustomError("invalid", message, None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Match(_Strict):
    """The five-tuple a rule applies to; ``*`` (the default) matches anything."""

    source: Name = Field(WILDCARD, alias="from")
    source_cluster: Name = Field(WILDCARD, alias="from_cluster")
    target: Name = Field(WILDCARD, alias="to")
    target_cluster: Name = Field(WILDCARD, alias="to_cluster")
    method: Name = WILDCARD


class RateLimit(_Strict):
    """A local token bucket: ``per_s`` calls a second on average, ``burst`` at once."""

    per_s: Annotated[float, Field(gt=0, le=10_000_000)]
    burst: Annotated[int, Field(ge=1, le=10_000_000)] | None = None

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.per_s))


RetryOn = Literal["connect_failure", "reset", "timeout", "retryable_status"]


def _default_retry_on() -> list[RetryOn]:
    return ["connect_failure", "reset", "retryable_status"]


class RetryBudgetConfig(_Strict):
    """Retries at most ``ratio`` of the calls of the rule over the last ``window_s``, plus
    ``min_per_s`` a second so that a quiet route can still retry (Finagle's RetryBudget)."""

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    min_per_s: Annotated[float, Field(ge=0, le=100_000)] = 0.0
    window_s: Annotated[float, Field(gt=0, le=600)] = 10.0


class Retry(_Strict):
    # Retries after the first attempt.
    attempts: Annotated[int, Field(ge=0, le=10)] = 2
    retry_on: list[RetryOn] = Field(default_factory=_default_retry_on, max_length=4)
    # A request that reached the provider is retried only for an idempotent method: the
    # provider may have run it. Failures before sending are always retryable.
    idempotent: bool = False
    backoff_base_ms: Annotated[int, Field(ge=0, le=60_000)] = 25
    backoff_max_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    budget: RetryBudgetConfig = Field(default_factory=RetryBudgetConfig)

    @model_validator(mode="after")
    def _backoff_order(self) -> Retry:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise _invalid("backoff_max_ms must be at least backoff_base_ms")
        return self


class Delay(_Strict):
    percent: Percent
    ms: Annotated[int, Field(ge=0, le=600_000)]


class Abort(_Strict):
    percent: Percent
    # The protocol's own status to answer with (HTTP 503, a gRPC code, a Dubbo status);
    # omitted: the protocol's "unavailable".
    status: Annotated[int, Field(ge=0, le=999)] | None = None
    message: Annotated[str, Field(max_length=1024)] = "fault injected by meshagent"


class Fault(_Strict):
    delay: Delay | None = None
    abort: Abort | None = None


class Degrade(_Strict):
    """Answer without calling upstream: ``always``, or only when the call would be refused
    for overload (rate limit or circuit breaker)."""

    when: Literal["always", "overloaded"] = "always"
    # ``value``: answer with ``value`` (JSON, encoded as the protocol's reply); ``error``:
    # answer with the protocol error ``status``/``message``.
    mode: Literal["value", "error"] = "value"
    value: Any = None
    status: Annotated[int, Field(ge=0, le=999)] | None = None
    message: Annotated[str, Field(max_length=1024)] = "degraded by meshagent"


class HeaderMatch(_Strict):
    """Exactly one of ``exact``, ``prefix``, ``regex`` (full match), or ``present``."""

    exact: Annotated[str, Field(max_length=MAX_HEADER_VALUE_CHARS)] | None = None
    prefix: Annotated[str, Field(max_length=MAX_HEADER_VALUE_CHARS)] | None = None
    regex: Annotated[str, Field(max_length=MAX_REGEX_CHARS)] | None = None
    present: bool | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"does not compile: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> HeaderMatch:
        given = [self.exact, self.prefix, self.regex, self.present]
        if sum(value is not None for value in given) != 1:
            raise _invalid("give exactly one of exact, prefix, regex, present")
        return self


class TrafficMatch(_Strict):
    """Calls whose headers (HTTP headers, gRPC metadata, Dubbo attachments) all match go
    to ``subset``: canaries by header."""

    headers: dict[Name, HeaderMatch] = Field(min_length=1, max_length=32)
    subset: Name


class Subset(_Strict):
    name: Name
    # Endpoint metadata every endpoint of the subset carries (version, tag, zone...).
    labels: dict[Name, Annotated[str, Field(max_length=1024)]] = Field(max_length=32)
    weight: Annotated[int, Field(ge=0, le=100)] = 0


class Traffic(_Strict):
    subsets: list[Subset] = Field(default_factory=list, max_length=64)
    matches: list[TrafficMatch] = Field(default_factory=list, max_length=64)
    # Prefer endpoints in the agent's zone (governance.zone) while at least
    # ``min_local_available`` of them can take traffic; else fail over to every zone.
    zone_preference: bool = False
    zone_label: Name = "zone"
    min_local_available: Annotated[int, Field(ge=1, le=10_000)] = 1
    # False: the calls stay in the agent's data center (``locality.dc``): endpoints
    # labelled ``dc`` with another data center, imports through a gateway among them, are
    # never used, even when no local one is left (docs/gateway.md).
    cross_dc: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Traffic:
        errors = []
        names = [s.name for s in self.subsets]
        for i, name in enumerate(names):
            if name in names[:i]:
                errors.append(f"subsets.{i}.name: duplicate subset {name!r}")
        if self.subsets and sum(s.weight for s in self.subsets) != 100:
            total = sum(s.weight for s in self.subsets)
            errors.append(f"subsets: weights add up to {total}, not 100")
        for i, match in enumerate(self.matches):
            if match.subset not in names:
                errors.append(f"matches.{i}.subset: no subset named {match.subset!r}")
        if errors:
            raise _invalid("; ".join(errors))
        return self


class Rule(_Strict):
    match: Match = Field(default_factory=Match)
    # The call's deadline, shortened to this (never lengthened).
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None
    rate_limit: RateLimit | None = None
    retry: Retry | None = None
    fault: Fault | None = None
    degrade: Degrade | None = None
    traffic: Traffic | None = None


class BreakerLimits(_Strict):
    """Per cluster (the called service); past a limit a call fails fast as overloaded."""

    max_connections: Annotated[int, Field(ge=0)] | None = None
    max_pending: Annotated[int, Field(ge=0)] | None = None
    max_in_flight: Annotated[int, Field(ge=0)] | None = None


class RuleSet(_Strict):
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    # By service name; "*" applies to every service without an entry of its own.
    circuit_breakers: dict[Name, BreakerLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_duplicate_matches(self) -> RuleSet:
        seen: dict[Match, int] = {}
        errors = []
        for i, rule in enumerate(self.rules):
            first = seen.setdefault(rule.match, i)
            if first != i:
                errors.append(f"rules.{i}.match: the same match as rules.{first}")
        if errors:
            raise _invalid("; ".join(errors))
        return self
