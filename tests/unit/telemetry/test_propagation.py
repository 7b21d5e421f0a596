from __future__ import annotations

import pytest

from agent.telemetry import propagation as p

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_traceparent_round_trip() -> None:
    parsed = p.parse_traceparent(f"00-{TRACE}-{SPAN}-01", "congo=t61rcWkgMzE")
    assert parsed == p.TraceParent(TRACE, SPAN, True, "congo=t61rcWkgMzE")
    assert parsed.header() == f"00-{TRACE}-{SPAN}-01"
    assert p.parse_traceparent(f"00-{TRACE}-{SPAN}-00") == p.TraceParent(TRACE, SPAN, False)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE}-{SPAN}-0",  # short flags
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case is invalid in W3C
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE}-{SPAN}-01",  # forbidden version
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has no extra fields
        f"00_{TRACE}_{SPAN}_01",
        "x" * 10_000,
    ],
)
def test_malformed_traceparent_is_none(value: str) -> None:
    assert p.parse_traceparent(value) is None


def test_future_version_read_as_00() -> None:
    parsed = p.parse_traceparent(f"01-{TRACE}-{SPAN}-01-whatever")
    assert parsed is not None and parsed.trace_id == TRACE


def test_oversized_tracestate_dropped_traceparent_kept() -> None:
    parsed = p.parse_traceparent(f"00-{TRACE}-{SPAN}-01", "a=" + "b" * 1000)
    assert parsed is not None and parsed.tracestate == ""


def test_b3_single_and_multi() -> None:
    single = p.parse_b3({"b3": f"{TRACE}-{SPAN}-1"})
    assert single == p.TraceParent(TRACE, SPAN, True)
    # 64-bit trace ids pad to 128 bits; "0" is not sampled.
    multi = p.parse_b3({"x-b3-traceid": TRACE[16:], "x-b3-spanid": SPAN, "x-b3-sampled": "0"})
    assert multi == p.TraceParent("0" * 16 + TRACE[16:], SPAN, False)
    assert p.parse_b3({"b3": "0"}) is None  # a bare sampling decision carries no ids


def test_incoming_prefers_w3c_and_flags_bad_headers() -> None:
    both = {"traceparent": f"00-{TRACE}-{SPAN}-01", "b3": f"{'a' * 32}-{SPAN}-1"}
    assert p.incoming_trace(both) == (p.TraceParent(TRACE, SPAN, True), False)
    assert p.incoming_trace({"traceparent": "nope"}) == (None, True)
    assert p.incoming_trace({}) == (None, False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("250", 250.0), ("1.5", 1.5), ("-1", None), ("0", None), ("nan", None), ("inf", None)],
)
def test_timeout_ms(value: str, expected: float | None) -> None:
    assert p.parse_timeout_ms(value) == expected


def test_grpc_timeout_round_trip() -> None:
    assert p.parse_grpc_timeout("250m") == pytest.approx(0.25)
    assert p.parse_grpc_timeout("2S") == 2.0
    assert p.parse_grpc_timeout("123456789S") is None  # 9 digits
    assert p.parse_grpc_timeout("5x") is None
    assert p.format_grpc_timeout(0.25) == "250m"
    assert p.parse_grpc_timeout(p.format_grpc_timeout(10 * 365 * 86400)) is not None


def test_hops_and_path_are_bounded() -> None:
    assert p.parse_hops("3") == 3
    assert p.parse_hops("-3") is None
    assert p.parse_hops("99999999999") is None
    assert p.parse_hops("three") is None
    path = p.parse_path(",".join(f"app{i}" for i in range(100)) + ",")
    assert len(path) == p.PATH_MAX_ENTRIES and path[-1] == "app99"
    assert p.parse_path("a," + "x" * 500) == ("a", "x" * p.PATH_ENTRY_MAX)
    assert p.format_path(("a,b", "c")) == "a;b,c"


def test_propagation_headers_filters_and_lowercases() -> None:
    found = p.propagation_headers(
        {"TraceParent": "v", "X-Meshagent-Hops": "2", "content-type": "application/json"}
    )
    assert found == {"traceparent": "v", "x-meshagent-hops": "2"}


@pytest.mark.parametrize("digits", ["\u00b2", "\u0661\u0662", "1_0", "\uff11"])
def test_only_ascii_digits_are_numbers(digits: str) -> None:
    # A superscript passed str.isdigit() and crashed int() (found by the fuzzer); other
    # scripts' digits were read as numbers (Arabic-Indic "12").
    assert p.parse_hops(digits) is None
    assert p.parse_grpc_timeout(digits + "S") is None
    assert p.parse_timeout_ms(digits) is None
