"""Which rule applies to a call: an index over the five-tuple whose lookup cost does not
depend on the number of rules.

Each field of a rule's match is either exact or ``*``. The fields that are exact form the
rule's *shape* (a bit mask over five fields, so at most 32 shapes). Rules are kept in one
hash table per shape, keyed by their exact values. A lookup tries the shapes present, most
specific first, and stops at the first hit: at most 32 dict probes whatever the rule count,
usually a handful (rule sets use few shapes). Results are cached per route.

Precedence (most specific wins):

1. more exact fields beat fewer;
2. between equally many, the rule exact in the earlier field of
   ``to``, ``method``, ``to_cluster``, ``from``, ``from_cluster`` wins
   (so ``to=A, method=*`` beats ``to=*, method=m``: the service named outranks the method).

Two rules with the same match are refused by the rule model, so a lookup is never ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from agent.calls import Route
from agent.governance.rules import WILDCARD

T = TypeVar("T")

# The fields in precedence order; bit 4 is "to", bit 0 is "from_cluster".
FIELDS = ("to", "method", "to_cluster", "from", "from_cluster")
_BITS = (16, 8, 4, 2, 1)

Key = tuple[str, str, str, str, str]

# Distinct routes remembered; past this the cache starts over (a flood of made-up method
# names must not grow memory without bound).
CACHE_MAX = 65_536


def route_key(route: Route) -> Key:
    return (route.target, route.method, route.target_cluster, route.source, route.source_cluster)


def shape_of(key: Key) -> int:
    return sum(bit for bit, value in zip(_BITS, key, strict=True) if value != WILDCARD)


def _precedence(shape: int) -> tuple[int, int]:
    return (shape.bit_count(), shape)


class RuleIndex(Generic[T]):
    """Rules by five-tuple; ``key_of`` gives a rule's match as a :data:`Key`."""

    def __init__(self, rules: Sequence[T], key_of: Callable[[T], Key]) -> None:
        tables: dict[int, dict[Key, T]] = {}
        for rule in rules:
            key = key_of(rule)
            # The rule model refuses duplicate matches; should one slip through, the first
            # keeps its place (as in the document's order).
            tables.setdefault(shape_of(key), {}).setdefault(key, rule)
        ordered = sorted(tables, key=_precedence, reverse=True)
        self._probes = tuple((_BITS_OF[shape], tables[shape]) for shape in ordered)
        self._cache: dict[Key, T | None] = {}
        self.size = len(rules)

    @property
    def shapes(self) -> int:
        return len(self._probes)

    def lookup(self, route: Route) -> T | None:
        # Keyed by the fields' tuple, not the Route: a tuple hashes and compares in C,
        # the dataclass' generated __hash__/__eq__ in Python (several times slower).
        key = (route.target, route.method, route.target_cluster, route.source, route.source_cluster)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        found = self.find(key)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[key] = found
        return found

    def find(self, key: Key) -> T | None:
        """The rule for ``key`` without the cache: at most one probe per shape."""
        for exact, table in self._probes:
            probe = (
                key[0] if exact[0] else WILDCARD,
                key[1] if exact[1] else WILDCARD,
                key[2] if exact[2] else WILDCARD,
                key[3] if exact[3] else WILDCARD,
                key[4] if exact[4] else WILDCARD,
            )
            rule = table.get(probe)
            if rule is not None:
                return rule
        return None


# For each shape, which of the five fields are exact.
_BITS_OF: dict[int, tuple[bool, bool, bool, bool, bool]] = {
    shape: (
        bool(shape & 16),
        bool(shape & 8),
        bool(shape & 4),
        bool(shape & 2),
        bool(shape & 1),
    )
    for shape in range(32)
}
