"""``meshagent iptables install|remove|show`` and ``meshagent wait-ready``.

``iptables`` is what an init container runs (as root, in the pod's network namespace);
``wait-ready`` is for an app's entrypoint or postStart hook, so the app sends nothing
before the agent can carry it.
"""

from __future__ import annotations

import argparse
import grp
import json
import pwd
import sys
import time
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_FAILED = 1


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated port list: {text!r}") from None
    for port in ports:
        if not 1 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return ports


def _strings(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    iptables = commands.add_parser(
        "iptables", help="install, remove or show the traffic capture rules (needs root)"
    )
    iptables.add_argument("action", choices=["install", "remove", "show"])
    iptables.add_argument("--capture-port", type=int, default=15001)
    iptables.add_argument("--inbound-port", type=int, default=15006, help="0: no inbound capture")
    iptables.add_argument(
        "--uid", type=_strings, default=(), help="the agent's uids or user names, comma-separated"
    )
    iptables.add_argument(
        "--gid", type=_strings, default=(), help="the agent's gids or group names"
    )
    iptables.add_argument("--exclude-outbound-ports", type=_ports, default=())
    iptables.add_argument("--exclude-outbound-cidrs", type=_strings, default=())
    iptables.add_argument(
        "--include-outbound-cidrs", type=_strings, default=(), help="default: every destination"
    )
    iptables.add_argument(
        "--exclude-inbound-ports",
        type=_ports,
        default=(15000,),
        help="default: 15000, the admin port (probes reach /readyz directly)",
    )
    iptables.add_argument(
        "--include-inbound-ports", type=_ports, default=(), help="default: every port"
    )
    iptables.add_argument("--ipv6", action="store_true", help="also ip6tables")
    iptables.add_argument(
        "--dry-run", action="store_true", help="print the iptables-restore input only"
    )

    wait = commands.add_parser("wait-ready", help="exit 0 once the agent's /readyz answers 200")
    wait.add_argument("--url", default="http://127.0.0.1:15000/readyz")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds")


def _uid(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def run_iptables(args: argparse.Namespace) -> int:
    from agent import iptables

    if args.action == "remove":
        return _report(lambda: iptables.remove(args.ipv6))
    if args.action == "show":
        try:
            found = iptables.show(args.ipv6)
        except (OSError, iptables.IptablesError) as exc:
            print(f"meshagent iptables: {exc}", file=sys.stderr)
            return EXIT_FAILED
        for family, lines in found.items():
            name = "iptables" if family == 4 else "ip6tables"
            print(f"# {name} -t nat: {'no meshagent rules' if not lines else ''}".rstrip())
            for line in lines:
                print(line)
        return 0
    try:
        options = iptables.CaptureOptions(
            capture_port=args.capture_port,
            inbound_port=args.inbound_port or None,
            uids=tuple(_uid(u) for u in args.uid),
            gids=tuple(_gid(g) for g in args.gid),
            exclude_outbound_ports=args.exclude_outbound_ports,
            exclude_outbound_cidrs=args.exclude_outbound_cidrs,
            include_outbound_cidrs=args.include_outbound_cidrs,
            exclude_inbound_ports=args.exclude_inbound_ports,
            include_inbound_ports=args.include_inbound_ports,
            ipv6=args.ipv6,
        )
    except (ValueError, KeyError) as exc:
        print(f"meshagent iptables: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        for family in (4, 6) if args.ipv6 else (4,):
            print(iptables.render_restore(iptables.build_ruleset(options, family)), end="")
        return 0
    return _report(lambda: iptables.install(options))


def _report(action: Callable[[], list[str]]) -> int:
    from agent.iptables import IptablesError

    try:
        steps = action()
    except (OSError, IptablesError) as exc:
        print(f"meshagent iptables: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for step in steps:
        print(step)
    return 0


def run_wait_ready(args: argparse.Namespace) -> int:
    # Here, not at the top: urllib.request brings http.client and email, 2 MB that
    # `meshagent run` (which imports this module for its subcommands) never uses.
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(args.url, timeout=max(0.1, min(2.0, remaining))) as reply:
                if reply.status == 200:
                    print(f"ready: {args.url}")
                    return 0
                last = f"HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            try:
                reasons = json.loads(exc.read()).get("reasons") or []
                if reasons:
                    last += ": " + "; ".join(str(r) for r in reasons)
            except (ValueError, AttributeError, OSError):
                pass
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = str(reason)
        if time.monotonic() >= deadline:
            print(
                f"meshagent wait-ready: {args.url} not ready after {args.timeout:g}s ({last})",
                file=sys.stderr,
            )
            return EXIT_FAILED
        # The poll interval of a bounded wait on an external process, not synchronisation.
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
