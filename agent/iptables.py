"""The nat-table rules that send a pod's TCP traffic through the agent.

After Istio's istio-iptables: our own chains in the ``nat`` table, entered from ``OUTPUT``
(connections the pod makes) and ``PREROUTING`` (connections coming in), so that removing
them never touches anybody else's rules.

- ``OUTPUT -p tcp -j MESHAGENT_OUTPUT``: the app's outbound TCP goes to
  ``MESHAGENT_REDIRECT`` (REDIRECT to the capture port) unless the packet is the agent's own
  (``-m owner --uid-owner/--gid-owner``: its upstream connections must not come back to it),
  local loopback traffic, an excluded port or an excluded CIDR. The one loopback case that
  is captured is Istio's: the agent connecting to the pod's own (non-loopback) address goes
  to the inbound port, as if it came from outside.
- ``PREROUTING -p tcp -j MESHAGENT_INBOUND``: inbound TCP goes to ``MESHAGENT_IN_REDIRECT``
  (REDIRECT to the inbound port) except excluded ports (the admin port, so that probes reach
  ``/readyz`` directly).

The rule set is built as plain data (:func:`build_ruleset`) and rendered for
``iptables-restore --noflush`` (:func:`render_restore`), which replaces our chains'
contents in one commit; the jumps from the built-in chains are added only if missing.
Installing twice is the same as installing once; :func:`remove` leaves no rule and no chain.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

TABLE = "nat"
OUTPUT_CHAIN = "MESHAGENT_OUTPUT"
REDIRECT_CHAIN = "MESHAGENT_REDIRECT"
INBOUND_CHAIN = "MESHAGENT_INBOUND"
IN_REDIRECT_CHAIN = "MESHAGENT_IN_REDIRECT"
CHAINS = (OUTPUT_CHAIN, REDIRECT_CHAIN, INBOUND_CHAIN, IN_REDIRECT_CHAIN)


class IptablesError(RuntimeError):
    """An iptables command failed; the message carries its stderr."""


@dataclass(frozen=True)
class CaptureOptions:
    capture_port: int = 15001
    # None: no inbound capture at all.
    inbound_port: int | None = 15006
    # The agent's own uids and gids: their connections are never captured.
    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    # Empty: capture every destination (after the exclusions).
    include_outbound_cidrs: tuple[str, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = ()
    # Empty: capture every inbound port (after the exclusions).
    include_inbound_ports: tuple[int, ...] = ()
    ipv6: bool = False

    def __post_init__(self) -> None:
        ports = [self.capture_port, *self.exclude_outbound_ports, *self.exclude_inbound_ports]
        ports += list(self.include_inbound_ports)
        if self.inbound_port is not None:
            ports.append(self.inbound_port)
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not between 1 and 65535")
        for cidr in (*self.exclude_outbound_cidrs, *self.include_outbound_cidrs):
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError with the reason
        if not self.uids and not self.gids:
            # Without an owner exclusion the agent's upstream connections would be captured
            # by its own rules, an endless loop; refuse rather than install that.
            raise ValueError("the agent's uid or gid is needed (its traffic must be excluded)")


@dataclass(frozen=True)
class Ruleset:
    """One family's rules: our chains with their rules, and the jumps into them."""

    family: int  # 4 or 6
    chains: tuple[str, ...]
    # Each rule is (chain, argument tuple) as after ``-A``.
    rules: tuple[tuple[str, tuple[str, ...]], ...]
    jumps: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())


def _cidrs(cidrs: Sequence[str], family: int) -> list[str]:
    return [
        str(network)
        for cidr in cidrs
        if (network := ipaddress.ip_network(cidr, strict=False)).version == family
    ]


def build_ruleset(options: CaptureOptions, family: int = 4) -> Ruleset:
    """The rules for one address family, in order."""
    if family not in (4, 6):
        raise ValueError("family is 4 or 6")
    localhost = "127.0.0.1/32" if family == 4 else "::1/128"
    rules: list[tuple[str, tuple[str, ...]]] = []
    jumps: list[tuple[str, tuple[str, ...]]] = []
    chains = [OUTPUT_CHAIN, REDIRECT_CHAIN]
    inbound = options.inbound_port is not None

    def add(chain: str, *args: str) -> None:
        rules.append((chain, args))

    add(REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(options.capture_port))
    if inbound:
        chains += [INBOUND_CHAIN, IN_REDIRECT_CHAIN]
        add(
            IN_REDIRECT_CHAIN,
            *("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(options.inbound_port)),
        )
        for port in options.exclude_inbound_ports:
            add(INBOUND_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
        if options.include_inbound_ports:
            for port in options.include_inbound_ports:
                add(INBOUND_CHAIN, "-p", "tcp", "--dport", str(port), "-j", IN_REDIRECT_CHAIN)
        else:
            add(INBOUND_CHAIN, "-p", "tcp", "-j", IN_REDIRECT_CHAIN)
        jumps.append(("PREROUTING", ("-p", "tcp", "-j", INBOUND_CHAIN)))

    # Excluded ports first: they win over everything below, as in istio-iptables.
    for port in options.exclude_outbound_ports:
        add(OUTPUT_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
    owners = [("--uid-owner", str(uid)) for uid in options.uids]
    owners += [("--gid-owner", str(gid)) for gid in options.gids]
    for flag, owner in owners:
        if inbound:
            # The agent calling the pod's own address over lo: deliver it as inbound.
            add(
                OUTPUT_CHAIN,
                *("-o", "lo", "!", "-d", localhost, "-m", "owner", flag, owner),
                *("-j", IN_REDIRECT_CHAIN),
            )
        # The app's own loopback traffic (localhost, its own address) stays direct.
        add(OUTPUT_CHAIN, "-o", "lo", "-m", "owner", "!", flag, owner, "-j", "RETURN")
        # The agent's own connections (to providers, to the app) must never loop back.
        add(OUTPUT_CHAIN, "-m", "owner", flag, owner, "-j", "RETURN")
    add(OUTPUT_CHAIN, "-d", localhost, "-j", "RETURN")
    for cidr in _cidrs(options.exclude_outbound_cidrs, family):
        add(OUTPUT_CHAIN, "-d", cidr, "-j", "RETURN")
    if options.include_outbound_cidrs:
        for cidr in _cidrs(options.include_outbound_cidrs, family):
            add(OUTPUT_CHAIN, "-d", cidr, "-j", REDIRECT_CHAIN)
    else:
        add(OUTPUT_CHAIN, "-j", REDIRECT_CHAIN)
    jumps.append(("OUTPUT", ("-p", "tcp", "-j", OUTPUT_CHAIN)))
    return Ruleset(family, tuple(chains), tuple(rules), tuple(jumps))


def render_restore(ruleset: Ruleset) -> str:
    """Input for ``iptables-restore --noflush``: declaring a chain there empties it (or
    creates it), so the chains' new contents replace the old in one commit."""
    lines = [f"*{TABLE}"]
    lines += [f":{chain} - [0:0]" for chain in ruleset.chains]
    lines += [" ".join(["-A", chain, *args]) for chain, args in ruleset.rules]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


Runner = Callable[[Sequence[str], str | None], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def _binaries(family: int) -> tuple[str, str, str]:
    prefix = "iptables" if family == 4 else "ip6tables"
    return prefix, f"{prefix}-restore", f"{prefix}-save"


def _families(ipv6: bool) -> list[int]:
    return [4, 6] if ipv6 else [4]


def _check(done: subprocess.CompletedProcess[str], argv: Sequence[str]) -> None:
    if done.returncode != 0:
        raise IptablesError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def install(options: CaptureOptions, run: Runner = run_command) -> list[str]:
    """Install (or replace) the rules; returns what was done, one line per step."""
    done_steps: list[str] = []
    for family in _families(options.ipv6):
        ruleset = build_ruleset(options, family)
        binary, restore, _save = _binaries(family)
        argv = [restore, "--noflush"]
        _check(run(argv, render_restore(ruleset)), argv)
        done_steps.append(f"{restore}: {len(ruleset.rules)} rules in {', '.join(ruleset.chains)}")
        if options.inbound_port is None:
            # A previous install with inbound capture left these behind.
            _remove_chains(binary, (INBOUND_CHAIN, IN_REDIRECT_CHAIN), run)
        for chain, args in ruleset.jumps:
            check = [binary, "-t", TABLE, "-C", chain, *args]
            if run(check, None).returncode != 0:
                argv = [binary, "-t", TABLE, "-A", chain, *args]
                _check(run(argv, None), argv)
                done_steps.append(" ".join(argv))
    return done_steps


def _jump_args(chain: str) -> tuple[str, str]:
    return ("OUTPUT", OUTPUT_CHAIN) if chain == OUTPUT_CHAIN else ("PREROUTING", INBOUND_CHAIN)


def _remove_chains(binary: str, chains: Sequence[str], run: Runner) -> list[str]:
    removed: list[str] = []
    for chain in chains:
        if chain in (OUTPUT_CHAIN, INBOUND_CHAIN):
            builtin, target = _jump_args(chain)
            argv = [binary, "-t", TABLE, "-D", builtin, "-p", "tcp", "-j", target]
            # -D removes one copy per call; a hand-added duplicate must go too. Bounded so
            # that a broken iptables cannot spin here.
            for _ in range(100):
                if run(argv, None).returncode != 0:
                    break
                removed.append(" ".join(argv))
    for chain in chains:
        if run([binary, "-t", TABLE, "-F", chain], None).returncode == 0:
            argv = [binary, "-t", TABLE, "-X", chain]
            _check(run(argv, None), argv)
            removed.append(f"{binary} -X {chain}")
    return removed


def remove(ipv6: bool = False, run: Runner = run_command) -> list[str]:
    """Remove every jump into our chains and the chains; absent ones are fine."""
    removed: list[str] = []
    for family in _families(ipv6):
        binary, _restore, _save = _binaries(family)
        removed += _remove_chains(binary, CHAINS, run)
    return removed


def show(ipv6: bool = False, run: Runner = run_command) -> dict[int, list[str]]:
    """Our rules as ``iptables-save`` prints them, by family (empty when none)."""
    found: dict[int, list[str]] = {}
    for family in _families(ipv6):
        _binary, _restore, save = _binaries(family)
        argv = [save, "-t", TABLE]
        done = run(argv, None)
        _check(done, argv)
        found[family] = [line for line in done.stdout.splitlines() if "MESHAGENT_" in line]
    return found
