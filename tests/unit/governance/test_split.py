from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.governance.rules import Traffic
from agent.governance.split import Endpoint, Splitter


@dataclass
class Ep:
    id: str
    metadata: dict[str, str] = field(default_factory=dict)
    up: bool = True

    def available(self, now: float) -> bool:
        return self.up


def meta(endpoint: Endpoint) -> Mapping[str, str]:
    assert isinstance(endpoint, Ep)
    return endpoint.metadata


EPS = [
    Ep("v1a", {"version": "1", "zone": "a"}),
    Ep("v1b", {"version": "1", "zone": "b"}),
    Ep("v2a", {"version": "2", "zone": "a"}),
]

TRAFFIC = Traffic.model_validate(
    {
        "subsets": [
            {"name": "stable", "labels": {"version": "1"}, "weight": 80},
            {"name": "canary", "labels": {"version": "2"}, "weight": 20},
        ],
        "matches": [{"headers": {"X-Canary": {"exact": "yes"}}, "subset": "canary"}],
    }
)


def test_weights_split_calls_across_subsets() -> None:
    splitter = Splitter(TRAFFIC, "")
    rng = random.Random(7)
    picks = Counter(splitter.pick_subset(lambda name: None, rng).name for _ in range(5000))  # type: ignore[union-attr]
    assert 0.77 < picks["stable"] / 5000 < 0.83


def test_a_header_match_sends_to_its_subset() -> None:
    splitter = Splitter(TRAFFIC, "")
    headers = {"x-canary": "yes"}
    subset = splitter.pick_subset(headers.get, random.Random(1))
    assert subset is not None and subset.name == "canary"
    assert splitter.excluded(EPS, meta, subset, 0) == {"v1a", "v1b"}


def test_an_empty_subset_fails_over_to_every_endpoint() -> None:
    splitter = Splitter(TRAFFIC, "")
    canary = splitter.subsets["canary"]
    down = [Ep("v1a", {"version": "1"}), Ep("v2a", {"version": "2"}, up=False)]
    assert splitter.excluded(down, meta, canary, 0) == frozenset()


def test_zone_preference_with_failover() -> None:
    zoned = Splitter(Traffic(zone_preference=True), "a")
    assert zoned.excluded(EPS, meta, None, 0) == {"v1b"}
    all_a_down = [Ep(e.id, e.metadata, up=e.metadata["zone"] != "a") for e in EPS]
    assert zoned.excluded(all_a_down, meta, None, 0) == frozenset()
    # with a subset, the zone is preferred inside the subset
    stable = Splitter(TRAFFIC.model_copy(update={"zone_preference": True}), "b")
    assert stable.excluded(EPS, meta, stable.subsets["stable"], 0) == {"v1a", "v2a"}


def test_local_only_never_leaves_the_data_center() -> None:
    endpoints = [
        Ep("here", {"dc": "a"}),
        Ep("unlabelled"),  # taken as local, as the balancer's levels take it
        Ep("import", {"dc": "b"}),
    ]
    local_only = Splitter(Traffic(cross_dc=False), "", local_dc="a")
    assert local_only.excluded(endpoints, meta, None, 0) == {"import"}
    # No failover: with every local endpoint down, the remote one stays excluded.
    down = [Ep(e.id, e.metadata, up=e.id == "import") for e in endpoints]
    assert local_only.excluded(down, meta, None, 0) == {"import"}
    # The default allows it; so does an agent that does not know its data center.
    assert Splitter(Traffic(), "", local_dc="a").excluded(endpoints, meta, None, 0) == frozenset()
    assert Splitter(Traffic(cross_dc=False), "").excluded(endpoints, meta, None, 0) == frozenset()
