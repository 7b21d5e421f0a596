"""``meshagent iptables`` (without applying) and ``meshagent wait-ready``; capture config."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from agent.cli import main
from agent.config import parse_config
from agent.errors import ConfigError


def test_iptables_dry_run_prints_the_restore_input(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["iptables", "install", "--uid=1337", "--exclude-outbound-ports=22,53", "--dry-run"]
    assert main([*argv, "--ipv6"]) == 0
    out = capsys.readouterr().out
    assert out.count("*nat") == 2 and out.count("COMMIT") == 2
    assert "-A MESHAGENT_OUTPUT -p tcp --dport 22 -j RETURN" in out
    assert "-A MESHAGENT_OUTPUT -m owner --uid-owner 1337 -j RETURN" in out
    assert "-A MESHAGENT_OUTPUT -d ::1/128 -j RETURN" in out


def test_iptables_without_the_agents_uid_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "install", "--dry-run"]) == 2
    assert "uid or gid" in capsys.readouterr().err


def test_iptables_takes_user_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "install", "--uid=nobody", "--inbound-port=0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--uid-owner 65534" in out and "MESHAGENT_INBOUND" not in out


class Readyz:
    """An HTTP server whose /readyz answers 503 until ``ready`` is set."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        readyz = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = readyz.ready.is_set()
                body = json.dumps({"ready": ok, "reasons": [] if ok else ["warming up"]})
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/readyz"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def readyz() -> Iterator[Readyz]:
    server = Readyz()
    yield server
    server.close()


def test_wait_ready_times_out_with_the_reasons(
    readyz: Readyz, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wait-ready", "--url", readyz.url, "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "not ready after 0.3s" in err and "HTTP 503: warming up" in err


def test_wait_ready_returns_once_ready(readyz: Readyz) -> None:
    # Ready a moment after the command starts polling.
    timer = threading.Timer(0.3, readyz.ready.set)
    timer.start()
    try:
        assert main(["wait-ready", "--url", readyz.url, "--timeout", "10"]) == 0
    finally:
        timer.cancel()


def test_wait_ready_with_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait-ready", "--url", "http://127.0.0.1:9/readyz", "--timeout", "0.2"]) == 1
    assert "refused" in capsys.readouterr().err


def test_capture_and_inbound_are_off_by_default_and_strict() -> None:
    config = parse_config({})
    assert not config.capture.enabled and not config.inbound.enabled
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "services": [{"name": "a"}],
                "capture": {
                    "sniff_timout_s": 1,
                    "services": [{"service": "b", "addresses": ["1.2.3.4"]}],
                },
                "inbound": {"enabled": True},
            }
        )
    errors = "\n".join(caught.value.errors)
    assert "capture.sniff_timout_s: Extra inputs are not permitted" in errors
    assert "inbound: app_port is required when inbound is enabled" in errors


def test_capture_services_must_name_configured_services_and_ips() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"capture": {"services": [{"service": "b", "addresses": ["1.2.3.4:80"]}]}})
    assert caught.value.errors == [
        "capture.services[0].service: unknown service 'b'; configured: none"
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "services": [{"name": "a"}],
                "capture": {"services": [{"service": "a", "addresses": ["db.local:80"]}]},
            }
        )
    assert "not an IP address" in caught.value.errors[0]
