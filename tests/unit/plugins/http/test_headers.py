from __future__ import annotations

from plugins.http.headers import add_forwarded, comma_tokens, end_to_end, is_upgrade


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
