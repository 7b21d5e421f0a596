"""Traffic splitting: which endpoints may serve a call (weighted subsets, header matches
for canaries, zone preference with failover). Pure: endpoints in, excluded ids out."""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from agent.governance.rules import HeaderMatch, Traffic


class Endpoint(Protocol):
    """What the split needs of an endpoint (agent.cluster.host.Host is one)."""

    @property
    def id(self) -> str: ...

    def available(self, now: float) -> bool: ...


E = TypeVar("E", bound=Endpoint)


def _header_test(match: HeaderMatch) -> Callable[[str | None], bool]:
    if match.present is not None:
        wanted = match.present
        return lambda value: (value is not None) == wanted
    if match.exact is not None:
        exact = match.exact
        return lambda value: value == exact
    if match.prefix is not None:
        prefix = match.prefix
        return lambda value: value is not None and value.startswith(prefix)
    assert match.regex is not None
    pattern = re.compile(match.regex)
    return lambda value: value is not None and pattern.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class _Subset:
    name: str
    labels: tuple[tuple[str, str], ...]


class Splitter:
    """A rule's ``traffic``, compiled."""

    def __init__(self, traffic: Traffic, local_zone: str, local_dc: str = "") -> None:
        self.subsets = {s.name: _Subset(s.name, tuple(s.labels.items())) for s in traffic.subsets}
        self._weighted = [self.subsets[s.name] for s in traffic.subsets if s.weight > 0]
        self._cumulative: list[int] = []
        total = 0
        for subset in traffic.subsets:
            if subset.weight > 0:
                total += subset.weight
                self._cumulative.append(total)
        self._matches = [
            (
                tuple((name.lower(), _header_test(test)) for name, test in m.headers.items()),
                self.subsets[m.subset],
            )
            for m in traffic.matches
        ]
        self.uses_headers = bool(self._matches)
        self.zone_label = traffic.zone_label
        self.local_zone = local_zone if traffic.zone_preference else ""
        self.min_local = traffic.min_local_available
        # Local only: the data center every endpoint must be in (an endpoint without a
        # ``dc`` label is taken as local, as the balancer's levels take it).
        self.only_dc = local_dc if not traffic.cross_dc else ""

    def pick_subset(
        self, header: Callable[[str], str | None], rng: random.Random
    ) -> _Subset | None:
        """The subset for one call: the first header match, else a weighted draw."""
        for tests, subset in self._matches:
            if all(test(header(name)) for name, test in tests):
                return subset
        if not self._cumulative:
            return None
        draw = rng.randrange(self._cumulative[-1])
        return self._weighted[bisect.bisect_right(self._cumulative, draw)]

    def excluded(
        self,
        endpoints: Iterable[E],
        metadata: Callable[[E], Mapping[str, str]],
        subset: _Subset | None,
        now: float,
    ) -> frozenset[str]:
        """Ids of the endpoints this call must not use.

        A subset with no available endpoint does not refuse the call: the call fails over
        to every endpoint (a canary that is down must not take its share of calls with
        it). Likewise the local zone is preferred only while it has ``min_local``
        available endpoints.
        """
        every = list(endpoints)
        candidates = every
        only_dc = self.only_dc
        if only_dc:
            candidates = [e for e in candidates if metadata(e).get("dc", only_dc) == only_dc]
        if subset is not None and subset.labels:
            labels = subset.labels
            chosen = [e for e in candidates if all(metadata(e).get(k) == v for k, v in labels)]
            if any(e.available(now) for e in chosen):
                candidates = chosen
        if self.local_zone:
            zone, label = self.local_zone, self.zone_label
            local = [e for e in candidates if metadata(e).get(label) == zone]
            if sum(1 for e in local if e.available(now)) >= self.min_local:
                candidates = local
        if candidates is every:
            return frozenset()
        keep = {e.id for e in candidates}
        return frozenset(e.id for e in every if e.id not in keep)
