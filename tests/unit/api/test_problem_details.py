"""Problem details and the API's JSON writer, as bytes."""

from __future__ import annotations

import json
from decimal import Decimal

from agent.api.problem_details import dumps, error_problem, invalid_request, problem_body
from agent.calls import CallRejected
from agent.errors import NoEndpointError, RemoteApplicationError, UpstreamTimeout


def test_dumps_is_compact_utf8_and_keeps_every_value() -> None:
    assert dumps({"a": [1, "é"], 2: None}) == '{"a":[1,"é"],"2":null}'.encode()
    # What orjson refuses is still written, exactly: a Java BigInteger, a set, a Decimal.
    assert json.loads(dumps({"big": 2**70, "s": {3}, "d": Decimal("1.10")})) == {
        "big": 2**70,
        "s": [3],
        "d": "1.10",
    }
    # NaN and infinities have no JSON literal: null, on both paths.
    assert json.loads(dumps({"n": float("nan"), "i": float("inf")})) == {"n": None, "i": None}
    assert json.loads(dumps({"n": float("nan"), "big": 2**70})) == {"n": None, "big": 2**70}


def test_problem_body_has_the_rfc_9457_members() -> None:
    body = json.loads(problem_body(404, "no such thing", extra=1))
    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no such thing",
        "extra": 1,
    }


def test_errors_map_to_their_statuses() -> None:
    assert error_problem(UpstreamTimeout("slow"))[0] == 504
    assert error_problem(NoEndpointError("none"))[0] == 503
    status, body = error_problem(RemoteApplicationError("boom", "com.acme.Boom"))
    assert status == 502
    assert json.loads(body)["exception"] == {"type": "com.acme.Boom", "message": "boom"}
    refused = CallRejected("rate_limited", "over the limit")
    status, body = error_problem(refused)
    assert status == refused.http_status() and json.loads(body)["reason"] == "rate_limited"


def test_a_failed_calls_chain_goes_out_as_an_extension() -> None:
    error = UpstreamTimeout("slow")
    error.chain = ({"app": "a", "hop": "1"},)
    assert json.loads(error_problem(error)[1])["chain"] == [{"app": "a", "hop": "1"}]


def test_invalid_request_lists_each_path() -> None:
    status, body = invalid_request([{"path": "body.args", "message": "bad"}])
    assert status == 400
    assert json.loads(body)["detail"] == "body.args: bad"


def test_a_lone_surrogate_is_written_as_an_escape_not_an_error() -> None:
    # Issue 23: a Java String may hold a lone UTF-16 surrogate; UTF-8 cannot carry it, so
    # the reply failed with a plain-text 500 after the provider had run the call. JSON can,
    # as \ud800; the rest of the value is written as the fast encoders write it.
    value = {"result": "a\ud800b", 1: [float("nan"), Decimal("1.50"), 2**70], "s": {"\udfff"}}
    body = dumps(value)
    assert b"\\ud800" in body and b"\\udfff" in body
    assert json.loads(body) == {
        "result": "a\ud800b",
        "1": [None, "1.50", 2**70],
        "s": ["\udfff"],
    }
