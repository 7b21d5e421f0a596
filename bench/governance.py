"""Hot-path cost of governance: opening a call with 0 (no policy), 1, 100 and 10,000 rules.

What is timed is ``Calls.start`` + ``Call.finish``, what every protocol path pays per request:
the rule lookup (index + route cache), the token bucket, the breaker counts. Two route mixes:

- ``hot``: 64 distinct routes, cycled (the route cache answers: a sidecar's steady state);
- ``cold``: every call a new route (the cache misses; the index is probed by shape);
- ``index``: the index lookup alone, uncached (``RuleIndex.find``), no call opened.

Every rule set gives the same rule to the measured routes (a rate limit that never runs
dry and breaker limits), the other rules are other services' (``to: svc-N``) and methods'
(``to: svc-N, method: m-K``), so only the rule *count* varies. Configurations are
interleaved round by round (the machine is shared and noisy); medians of the rounds.

    .venv/bin/python bench/governance.py [--rounds 7] [--calls 200000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from agent.calls import Calls, Direction, Outcome, Route
from agent.governance.policy import GovernancePolicy
from agent.governance.rules import RuleSet


def rule_set(count: int) -> RuleSet:
    rules: list[dict[str, object]] = [
        {"match": {"to": "svc"}, "rate_limit": {"per_s": 1e7, "burst": 10_000_000}}
    ]
    for i in range(count - 1):
        if i % 2:
            rules.append({"match": {"to": f"svc-{i}"}, "timeout_ms": 100})
        else:
            rules.append({"match": {"to": f"svc-{i}", "method": f"m-{i}"}, "timeout_ms": 100})
    return RuleSet.model_validate(
        {"rules": rules, "circuit_breakers": {"svc": {"max_in_flight": 1_000_000}}}
    )


def hub(rules: int) -> Calls:
    calls = Calls("app", "")
    if rules:
        policy = GovernancePolicy(rule_set(rules))
        calls.policies.append(policy)
        calls.observers.append(policy)
    return calls


def run(calls: Calls, routes: list[Route]) -> float:
    """Seconds per call."""
    start = calls.start
    n = len(routes)
    began = time.perf_counter()
    for route in routes:
        call = start("bench", Direction.OUTBOUND, route, None, 1.0)
        call.finish(Outcome.OK)
    return (time.perf_counter() - began) / n


def run_index(calls: Calls, routes: list[Route]) -> float:
    """Seconds per uncached index lookup (no policy: 0)."""
    if not calls.policies:
        return 0.0
    policy = calls.policies[0]
    assert isinstance(policy, GovernancePolicy)
    find = policy.table.index.find
    keys = [(r.target, r.method, r.target_cluster, r.source, r.source_cluster) for r in routes]
    began = time.perf_counter()
    for key in keys:
        find(key)
    return (time.perf_counter() - began) / len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    sizes = [0, 1, 100, 10_000]
    hubs = {size: hub(size) for size in sizes}
    hot_routes = [Route("app", "", "svc", "", f"method{i % 64}") for i in range(args.calls)]
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for size in sizes:
            results.setdefault(("index", size), []).append(run_index(hubs[size], hot_routes))
        for mix in ("hot", "cold"):
            for size in sizes:
                if mix == "cold":
                    # Fresh route objects with fresh methods: every lookup misses the cache.
                    stamp = time.perf_counter_ns()
                    routes = [
                        Route("app", "", "svc", "", f"m{stamp}-{i}") for i in range(args.calls)
                    ]
                else:
                    routes = hot_routes
                results.setdefault((mix, size), []).append(run(hubs[size], routes))
    print(f"{'mix':<5} {'rules':>6} {'median ns/call':>15} {'vs no policy':>13} {'vs 1 rule':>10}")
    for mix in ("hot", "cold", "index"):
        base = statistics.median(results[(mix, 0)])
        one = statistics.median(results[(mix, 1)])
        for size in sizes:
            median = statistics.median(results[(mix, size)])
            versus_base = f"{median / base:.2f}" if base else "-"
            print(
                f"{mix:<5} {size:>6} {median * 1e9:>15.0f} {versus_base:>13} {median / one:>10.2f}"
            )


if __name__ == "__main__":
    main()
