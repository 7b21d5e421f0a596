import pytest

from agent.discovery.types import Add, Instance, Remove, Reset, frozen_mapping
from agent.runtime.mesh_stream import (
    StreamError,
    decode,
    encode,
    failures_from_json,
    failures_to_json,
    host_states_from_json,
    metrics_from_json,
    metrics_to_json,
    update_from_json,
    update_to_json,
)
from agent.telemetry.exposition import CounterMetricFamily, HistogramMetricFamily
from agent.telemetry.recent_failures import FailedCall

A = Instance("10.0.0.1:80", "10.0.0.1", 80, 50, frozen_mapping({"zone": "a"}), 7)
B = Instance("10.0.0.2:80", "10.0.0.2", 80, 100, frozen_mapping(), 9)


@pytest.mark.parametrize(
    "update", [Reset(9, (A, B)), Reset(1, ()), Add(10, A), Remove(11, "10.0.0.1:80", 7)]
)
def test_updates_round_trip_through_one_line(update: object) -> None:
    line = encode({"t": "update", "c": "svc", "u": update_to_json(update)})  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    message = decode(line)
    assert update_from_json(message["u"]) == update


def test_metadata_with_newlines_stays_on_one_line() -> None:
    odd = Instance("x", "h", 1, 1, frozen_mapping({"k": "a\nb"}), 1)
    line = encode({"t": "update", "c": "s", "u": update_to_json(Add(1, odd))})
    assert line.count(b"\n") == 1
    assert update_from_json(decode(line)["u"]) == Add(1, odd)


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b"[1,2]\n", b'{"no":"type"}\n', b'{"t":5}\n'],
)
def test_unreadable_lines_are_stream_errors(line: bytes) -> None:
    with pytest.raises(StreamError):
        decode(line)


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"k": "reset", "r": 1},
        {"k": "reset", "r": "1", "i": []},
        {"k": "add", "r": 1, "i": ["x", "h", "80", 1, {}, 1]},
        {"k": "remove", "r": 1, "id": 5, "rr": 1},
        {"k": "other", "r": 1},
    ],
)
def test_malformed_updates_are_refused(value: object) -> None:
    with pytest.raises(StreamError):
        update_from_json(value)


def test_host_states() -> None:
    assert host_states_from_json({"a": [True, 12.5, False], "b": [False, 0, True]}) == {
        "a": (True, 12.5, False),
        "b": (False, 0.0, True),
    }
    for bad in ([], {"a": [1, 0, False]}, {"a": [True, "0", False]}, {"a": [True, 0]}):
        with pytest.raises(StreamError):
            host_states_from_json(bad)


def test_metric_families_round_trip() -> None:
    counter = CounterMetricFamily("meshagent_calls", "Calls", labels=["service"])
    counter.add_metric(["a"], 3)
    histogram = HistogramMetricFamily("lag", "Lag", labels=[])
    histogram.add_metric([], [("0.1", 2), ("+Inf", 3)], 0.5)
    back = metrics_from_json(
        decode(encode({"t": "m", "f": metrics_to_json([counter, histogram])}))["f"]
    )
    assert [(m.name, m.type, m.documentation) for m in back] == [
        ("meshagent_calls", "counter", "Calls"),
        ("lag", "histogram", "Lag"),
    ]
    assert back[0].samples == counter.samples
    assert back[1].samples == histogram.samples
    for bad in ({}, [["n", "d", "counter", [["s", {}, "1"]]]], [["n", "d"]]):
        with pytest.raises(StreamError):
            metrics_from_json(bad)


def test_failed_calls_round_trip() -> None:
    call = FailedCall(
        12.5, "http", "outbound", "app", "web", "GET", "error", "502", "refused", ({"a": "b"},)
    )
    (back,) = failures_from_json(decode(encode({"t": "m", "f": failures_to_json([call])}))["f"])
    assert (back.at, back.target, back.status, back.error, back.chain) == (
        12.5,
        "web",
        "502",
        "refused",
        ({"a": "b"},),
    )
    for bad in ({}, [[1, "x"]], [[1, *["s"] * 8, "not a list"]], [["t", *["s"] * 8, []]]):
        with pytest.raises(StreamError):
            failures_from_json(bad)


async def test_read_message_ends_at_eof_and_refuses_an_overlong_line() -> None:
    import asyncio

    from agent.runtime.mesh_stream import read_message

    reader = asyncio.StreamReader(limit=64)
    reader.feed_data(encode({"t": "ready"}) + b'{"t":"x","pad":"' + b"a" * 100 + b'"}\n')
    reader.feed_eof()
    assert await read_message(reader) == {"t": "ready"}
    with pytest.raises(StreamError, match="a line over"):
        await read_message(reader)
    done = asyncio.StreamReader()
    done.feed_eof()
    assert await read_message(done) is None
