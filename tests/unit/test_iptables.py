"""The capture rule set as data: order, exclusions, families, idempotent application."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from agent.iptables import (
    CaptureOptions,
    build_ruleset,
    install,
    remove,
    render_restore,
)


def lines(options: CaptureOptions, family: int = 4) -> list[str]:
    return [" ".join(["-A", chain, *args]) for chain, args in build_ruleset(options, family).rules]


def test_default_rules_follow_istio_order() -> None:
    rules = lines(CaptureOptions(uids=(1337,), exclude_inbound_ports=(15000,)))
    assert rules == [
        "-A MESHAGENT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A MESHAGENT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A MESHAGENT_INBOUND -p tcp --dport 15000 -j RETURN",
        "-A MESHAGENT_INBOUND -p tcp -j MESHAGENT_IN_REDIRECT",
        "-A MESHAGENT_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337"
        " -j MESHAGENT_IN_REDIRECT",
        "-A MESHAGENT_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A MESHAGENT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESHAGENT_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A MESHAGENT_OUTPUT -j MESHAGENT_REDIRECT",
    ]
    ruleset = build_ruleset(CaptureOptions(uids=(1337,)))
    assert ruleset.jumps == (
        ("PREROUTING", ("-p", "tcp", "-j", "MESHAGENT_INBOUND")),
        ("OUTPUT", ("-p", "tcp", "-j", "MESHAGENT_OUTPUT")),
    )


def test_exclusions_come_before_the_redirect_and_gids_like_uids() -> None:
    options = CaptureOptions(
        capture_port=16001,
        inbound_port=None,
        uids=(1337,),
        gids=(1338,),
        exclude_outbound_ports=(22, 53),
        exclude_outbound_cidrs=("10.0.0.0/8", "fd00::/8"),
        include_outbound_cidrs=("10.96.0.0/12",),
    )
    rules = lines(options)
    assert rules[0] == "-A MESHAGENT_REDIRECT -p tcp -j REDIRECT --to-ports 16001"
    output = [r for r in rules if r.startswith("-A MESHAGENT_OUTPUT")]
    assert output == [
        "-A MESHAGENT_OUTPUT -p tcp --dport 22 -j RETURN",
        "-A MESHAGENT_OUTPUT -p tcp --dport 53 -j RETURN",
        "-A MESHAGENT_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A MESHAGENT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESHAGENT_OUTPUT -o lo -m owner ! --gid-owner 1338 -j RETURN",
        "-A MESHAGENT_OUTPUT -m owner --gid-owner 1338 -j RETURN",
        "-A MESHAGENT_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A MESHAGENT_OUTPUT -d 10.0.0.0/8 -j RETURN",
        "-A MESHAGENT_OUTPUT -d 10.96.0.0/12 -j MESHAGENT_REDIRECT",
    ]
    # No inbound port: no inbound chains, no PREROUTING jump.
    ruleset = build_ruleset(options)
    assert ruleset.chains == ("MESHAGENT_OUTPUT", "MESHAGENT_REDIRECT")
    assert [chain for chain, _ in ruleset.jumps] == ["OUTPUT"]


def test_ipv6_uses_its_own_loopback_and_cidrs() -> None:
    options = CaptureOptions(
        uids=(7,), include_inbound_ports=(8080,), exclude_outbound_cidrs=("10.0.0.0/8", "fd00::/8")
    )
    rules = lines(options, family=6)
    assert "-A MESHAGENT_OUTPUT -d ::1/128 -j RETURN" in rules
    assert "-A MESHAGENT_OUTPUT -d fd00::/8 -j RETURN" in rules
    assert not any("10.0.0.0/8" in r or "127.0.0.1" in r for r in rules)
    assert "-A MESHAGENT_INBOUND -p tcp --dport 8080 -j MESHAGENT_IN_REDIRECT" in rules
    assert "-A MESHAGENT_INBOUND -p tcp -j MESHAGENT_IN_REDIRECT" not in rules


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "uid or gid"),
        ({"uids": (1,), "capture_port": 0}, "port 0"),
        ({"uids": (1,), "exclude_outbound_cidrs": ("10.0.0.0/33",)}, "10.0.0.0/33"),
    ],
)
def test_refuses_options_that_would_loop_or_are_invalid(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CaptureOptions(**kwargs)  # type: ignore[arg-type]


def test_restore_input_declares_every_chain_then_its_rules() -> None:
    text = render_restore(build_ruleset(CaptureOptions(uids=(1,))))
    assert text.startswith("*nat\n:MESHAGENT_OUTPUT - [0:0]\n")
    assert text.endswith("COMMIT\n")
    assert text.count(":MESHAGENT_") == 4


class FakeIptables:
    """Enough of iptables' behaviour for the install/remove logic: chains and jumps."""

    def __init__(self) -> None:
        self.jumps: list[tuple[str, ...]] = []
        self.chains: set[str] = set()
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        rc = 0
        if argv[0].endswith("-restore"):
            assert stdin is not None
            self.chains |= {line[1:].split()[0] for line in stdin.splitlines() if line[0] == ":"}
        else:
            op, rest = argv[3], tuple(argv[4:])
            if op == "-C":
                rc = 0 if rest in self.jumps else 1
            elif op == "-A":
                self.jumps.append(rest)
            elif op == "-D":
                if rest in self.jumps:
                    self.jumps.remove(rest)
                else:
                    rc = 1
            elif op == "-F":
                rc = 0 if rest[0] in self.chains else 1
            elif op == "-X":
                self.chains.discard(rest[0])
        return subprocess.CompletedProcess(argv, rc, "", "")


def test_install_twice_is_install_once_and_remove_leaves_nothing() -> None:
    fake = FakeIptables()
    options = CaptureOptions(uids=(1,))
    install(options, run=fake)
    install(options, run=fake)
    assert sorted(fake.jumps) == [
        ("OUTPUT", "-p", "tcp", "-j", "MESHAGENT_OUTPUT"),
        ("PREROUTING", "-p", "tcp", "-j", "MESHAGENT_INBOUND"),
    ]
    fake.jumps.append(("OUTPUT", "-p", "tcp", "-j", "MESHAGENT_OUTPUT"))  # a duplicate by hand
    remove(run=fake)
    assert fake.jumps == [] and fake.chains == set()
    # Removing again is fine: nothing there, nothing fails.
    assert remove(run=fake) == []
