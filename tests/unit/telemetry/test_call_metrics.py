from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.calls import Calls, Direction, Outcome
from agent.telemetry.call_metrics import OTHER_METHOD, CallMetrics
from agent.telemetry.exposition import Registry, render


class Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: CallMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = Registry()
    registry.register(metrics)
    text = render(registry).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_requests_latency_in_flight_retries_by_five_tuple() -> None:
    clock = Clock()
    calls = Calls("app-a", "c1", clock=clock)
    metrics = CallMetrics()
    calls.observers.append(metrics)
    route = calls.outbound_route("svc", "m", "c2")
    ok = calls.start("dubbo", Direction.OUTBOUND, route)
    hanging = calls.start("dubbo", Direction.OUTBOUND, route)
    ok.end_attempt(ok.begin_attempt("h:1"), Outcome.CONNECT_ERROR)
    ok.end_attempt(ok.begin_attempt("h:2"), Outcome.OK)
    clock.now += 0.003
    ok.finish(Outcome.OK, "20")
    failed = calls.start("dubbo", Direction.OUTBOUND, route)
    clock.now += 2.0
    failed.finish(Outcome.TIMEOUT, "31")
    samples = scrape(metrics)
    five = {
        "from": "app-a",
        "from_cluster": "c1",
        "to": "svc",
        "to_cluster": "c2",
        "method": "m",
        "protocol": "dubbo",
        "direction": "outbound",
    }
    assert (five | {"outcome": "ok"}, 1.0) in samples["meshagent_calls_total"]
    assert (five | {"outcome": "timeout"}, 1.0) in samples["meshagent_calls_total"]
    assert samples["meshagent_calls_in_flight"] == [(five, 1.0)]  # `hanging`
    assert samples["meshagent_call_retries_total"] == [(five, 1.0)]
    buckets = {
        labels["le"]: value
        for labels, value in samples["meshagent_call_duration_seconds_bucket"]
        if labels["outcome"] == "ok"
    }
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1 and buckets["+Inf"] == 1
    sums = dict(
        (labels["outcome"], value)
        for labels, value in samples["meshagent_call_duration_seconds_sum"]
    )
    assert abs(sums["timeout"] - 2.0) < 1e-6
    hanging.finish(Outcome.OK)
    assert scrape(metrics)["meshagent_calls_in_flight"] == [(five, 0.0)]


def test_method_cardinality_is_bounded() -> None:
    calls = Calls("app-a")
    metrics = CallMetrics(max_methods=3)
    calls.observers.append(metrics)
    for i in range(50):
        calls.start("grpc", Direction.INVOKE, calls.outbound_route("svc", f"m{i}")).finish(
            Outcome.OK
        )
    methods = {labels["method"] for labels, _ in scrape(metrics)["meshagent_calls_total"]}
    assert methods == {"m0", "m1", "m2", OTHER_METHOD}
    other = [
        v
        for labels, v in scrape(metrics)["meshagent_calls_total"]
        if labels["method"] == OTHER_METHOD
    ]
    assert other == [47.0]


def test_calls_past_the_route_cache_are_still_counted(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from agent.telemetry import call_metrics

    monkeypatch.setattr(call_metrics, "_BY_ROUTE_MAX", 2)
    calls = Calls("app-a")
    metrics = CallMetrics(max_methods=100)
    calls.observers.append(metrics)
    for _ in range(3):
        for i in range(5):
            calls.start("grpc", Direction.INVOKE, calls.outbound_route("svc", f"m{i}")).finish(
                Outcome.OK
            )
    counted = {labels["method"]: v for labels, v in scrape(metrics)["meshagent_calls_total"]}
    assert counted == {f"m{i}": 3.0 for i in range(5)}
    assert len(metrics._by_route) == 2
