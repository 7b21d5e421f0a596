"""``meshagent injector``: the sidecar-injecting admission webhook (docs/kubernetes.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.errors import ConfigError, MeshAgentError

EXIT_CONFIG = 2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Not the server module: it imports Starlette, which `meshagent run` never needs.
    from agent.injector.config import DEFAULT_MAX_BODY_BYTES

    injector = commands.add_parser(
        "injector", help="serve the sidecar-injecting mutating admission webhook over HTTPS"
    )
    injector.add_argument("-c", "--config", required=True, help="the injector's YAML file")
    injector.add_argument("--tls-cert", required=True, type=Path, help="PEM certificate chain")
    injector.add_argument("--tls-key", required=True, type=Path, help="PEM private key")
    injector.add_argument("--host", default="0.0.0.0")
    injector.add_argument("--port", type=int, default=9443)
    injector.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="AdmissionReview bodies over this are refused with 413",
    )
    injector.add_argument("--log-level", default="INFO")
    injector.add_argument(
        "--check", action="store_true", help="validate the config and certificate, then exit"
    )


def run(args: argparse.Namespace) -> int:
    import ssl

    from agent.injector.config import load_injector_config
    from agent.injector.server import serve
    from agent.telemetry import logfmt
    from agent.tls import RotatingCertificate

    try:
        config = load_injector_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid injector configuration", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        RotatingCertificate(args.tls_cert, args.tls_key, what="webhook")
    except (OSError, ssl.SSLError) as exc:
        print(f"meshagent injector: cannot load the TLS certificate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"{args.config}: ok")
        return 0
    logfmt.configure(args.log_level)
    import uvloop

    try:
        return uvloop.run(
            serve(config, args.host, args.port, args.tls_cert, args.tls_key, args.max_body_bytes)
        )
    except MeshAgentError as exc:
        print(f"meshagent injector: {exc}", file=sys.stderr)
        return EXIT_CONFIG
