from __future__ import annotations

import h2.events

from plugins.http.h2_floods import FloodGuard


def reset(remote: bool) -> h2.events.StreamReset:
    return h2.events.StreamReset(stream_id=1, remote_reset=remote)


def ping() -> h2.events.PingReceived:
    return h2.events.PingReceived(ping_data=b"12345678")


def test_client_resets_past_the_limit_are_a_flood() -> None:
    guard = FloodGuard(max_resets_per_s=3, max_control_frames_per_s=3)
    assert [guard.check(reset(remote=True)) for _ in range(3)] == [None, None, None]
    assert "rapid reset" in (guard.check(reset(remote=True)) or "")
    # Our own resets (remote_reset False) are not the client's doing.
    quiet = FloodGuard(max_resets_per_s=1)
    assert [quiet.check(reset(remote=False)) for _ in range(10)] == [None] * 10


def test_settings_and_pings_share_a_limit_and_data_does_not_count() -> None:
    guard = FloodGuard(max_resets_per_s=1, max_control_frames_per_s=2)
    assert guard.check(ping()) is None
    assert guard.check(h2.events.RemoteSettingsChanged()) is None
    for _ in range(10):
        assert guard.check(h2.events.DataReceived(stream_id=1, data=b"x")) is None
    assert "SETTINGS/PING" in (guard.check(ping()) or "")
