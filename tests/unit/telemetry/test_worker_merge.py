from agent.telemetry.exposition import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.telemetry.worker_merge import merge


def counter(name: str, value: float, service: str = "a") -> Metric:
    family = CounterMetricFamily(name, "help", labels=["service"])
    family.add_metric([service], value)
    return family


def gauge(name: str, value: float) -> Metric:
    return GaugeMetricFamily(name, "help", value=value)


def samples(metrics: list[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    found = [m for m in metrics if m.name == name]
    assert len(found) == 1
    return [(s.labels, s.value) for s in found[0].samples]


def test_call_counters_are_summed_over_every_process() -> None:
    merged = merge(
        [counter("meshagent_calls", 1)],
        {
            "0": [counter("meshagent_calls", 5), counter("meshagent_calls", 2, "b")],
            "1": [counter("meshagent_calls", 7)],
        },
    )
    assert samples(merged, "meshagent_calls") == [({"service": "a"}, 13), ({"service": "b"}, 2)]


def test_what_the_supervisor_decides_is_counted_once() -> None:
    merged = merge(
        [counter("meshagent_upstream_ejections", 1)],
        {
            "0": [counter("meshagent_upstream_ejections", 1)],
            "1": [counter("meshagent_upstream_ejections", 1)],
        },
    )
    assert samples(merged, "meshagent_upstream_ejections") == [({"service": "a"}, 1)]


def test_process_gauges_keep_one_series_per_process() -> None:
    merged = merge(
        [gauge("process_resident_memory_bytes", 10)],
        {
            "0": [gauge("process_resident_memory_bytes", 20)],
            "1": [gauge("process_resident_memory_bytes", 30)],
        },
    )
    assert samples(merged, "process_resident_memory_bytes") == [
        ({"worker": "supervisor"}, 10),
        ({"worker": "0"}, 20),
        ({"worker": "1"}, 30),
    ]


def test_families_only_workers_have_are_kept() -> None:
    merged = merge(
        [],
        {
            "0": [gauge("meshagent_calls_in_flight", 2)],
            "1": [gauge("meshagent_calls_in_flight", 3)],
        },
    )
    assert samples(merged, "meshagent_calls_in_flight") == [({}, 5)]


def test_listener_connections_show_how_the_kernel_spread_them() -> None:
    merged = merge(
        [],
        {
            "0": [counter("meshagent_listener_connections", 3)],
            "1": [counter("meshagent_listener_connections", 4)],
        },
    )
    assert samples(merged, "meshagent_listener_connections") == [
        ({"service": "a", "worker": "0"}, 3),
        ({"service": "a", "worker": "1"}, 4),
    ]
