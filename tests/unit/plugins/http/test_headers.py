from __future__ import annotations

from plugins.http.headers import (
    add_forwarded,
    add_rfc7239,
    comma_tokens,
    end_to_end,
    forwarding,
    is_upgrade,
    split_fields,
)


def test_hop_by_hop_and_connection_named_fields_are_dropped() -> None:
    headers = [
        (b"Host", b"svc"),
        (b"Connection", b"Keep-Alive, X-Hop"),
        (b"connection", b"x-other"),
        (b"X-Hop", b"1"),
        (b"X-Other", b"2"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Upgrade", b"websocket"),
        (b"X-Keep", b"yes"),
        (b"x-keep", b"twice"),
    ]
    assert end_to_end(headers) == [(b"Host", b"svc"), (b"X-Keep", b"yes"), (b"x-keep", b"twice")]


def test_upgrade_handshake_is_kept_when_asked() -> None:
    headers = [(b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket"), (b"A", b"1")]
    assert is_upgrade(headers)
    assert end_to_end(headers, keep_upgrade=True) == [
        (b"A", b"1"),
        (b"Connection", b"upgrade"),
        (b"Upgrade", b"websocket"),
    ]
    assert not is_upgrade([(b"Upgrade", b"websocket")])  # not named in Connection
    assert not is_upgrade([(b"Connection", b"upgrade")])


def test_comma_tokens_span_repeated_fields() -> None:
    headers = [(b"Connection", b" A ,b,, "), (b"CONNECTION", b"c")]
    assert comma_tokens(headers, b"connection") == [b"a", b"b", b"c"]


def test_forwarded_for_appends_to_the_chain() -> None:
    headers = [(b"X-Forwarded-For", b"10.0.0.1"), (b"X-Forwarded-Proto", b"https"), (b"A", b"1")]
    assert add_forwarded(headers, "127.0.0.1", b"svc:80") == [
        (b"A", b"1"),
        (b"X-Forwarded-For", b"10.0.0.1, 127.0.0.1"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"svc:80"),
    ]
    assert add_forwarded([], "::1", None) == [
        (b"X-Forwarded-For", b"::1"),
        (b"X-Forwarded-Proto", b"http"),
    ]


def test_rfc7239_appends_this_hop_after_earlier_ones() -> None:
    headers = [(b"Forwarded", b"for=192.0.2.1"), (b"A", b"1"), (b"forwarded", b"for=192.0.2.2")]
    assert add_rfc7239(headers, "2001:db8::1", b"svc:8080") == [
        (b"A", b"1"),
        (
            b"Forwarded",
            b'for=192.0.2.1, for=192.0.2.2, for="[2001:db8::1]";host="svc:8080";proto=http',
        ),
    ]
    assert add_rfc7239([], "10.0.0.1", None) == [(b"Forwarded", b"for=10.0.0.1;proto=http")]
    assert add_rfc7239([], "unknown", b'a"b') == [
        (b"Forwarded", b'for=unknown;host="a\\"b";proto=http')
    ]


def test_forwarding_adds_what_is_configured() -> None:
    both = forwarding([], True, True, "10.0.0.1", b"h")
    assert [name for name, _ in both] == [
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Forwarded-Host",
        b"Forwarded",
    ]
    assert forwarding([(b"A", b"1")], False, False, "10.0.0.1", b"h") == [(b"A", b"1")]


def test_split_fields_reads_framing_in_one_pass() -> None:
    headers = [
        (b"Host", b"svc"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Content-Length", b"5"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Kept", b"yes"),
    ]
    fields, length, chunked, host = split_fields(headers)
    assert fields == [(b"Host", b"svc"), (b"Content-Length", b"5"), (b"X-Kept", b"yes")]
    assert (length, chunked, host) == (b"5", False, b"svc")
    fields, length, chunked, _ = split_fields([(b"Transfer-Encoding", b"chunked")])
    assert (fields, length, chunked) == ([], None, True)
    # A field the Connection header names is hop-by-hop, whatever it is.
    fields, length, _, host = split_fields(
        [(b"Connection", b"content-length, host"), (b"Content-Length", b"1"), (b"Host", b"h")]
    )
    assert (fields, length, host) == ([], None, None)
