"""The cost of interception: TCP direct vs through an explicit listener vs captured.

Run as root (it builds network namespaces, as the integration tests do):

    python bench/capture.py [--rounds 5] [--connections 300] [--mib 64]

A client namespace with the rules installed and the agent running as ``nobody``; a
provider namespace with an echo/sink server. The three paths reach the same provider:

- direct:   provider:7999, an outbound port excluded from capture;
- listener: 127.0.0.1:9000, an explicit ``tcp`` listener of the agent;
- capture:  provider:7000, redirected by iptables to the capture port.

Each round measures every path once, in a shuffled order, so that drift on a shared
machine spreads over all three; medians over the rounds are printed, and the ratios to
direct. Client, server and agent are separate processes (no shared GIL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROVIDER = "10.201.1.2"
CLIENT = "10.201.1.1"


# -- the processes inside the namespaces ----------------------------------------------


def serve(host: str, ports: list[int]) -> None:
    """One line in → the line back; a stream starting with 'S' → its length at EOF."""

    def handle(conn: socket.socket) -> None:
        with conn:
            first = conn.recv(65536)
            if first.startswith(b"S"):
                total = len(first)
                while chunk := conn.recv(1 << 20):
                    total += len(chunk)
                conn.sendall(str(total).encode())
                return
            data = first
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data)

    def accept(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    for port in ports:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        threading.Thread(target=accept, args=(listener,), daemon=True).start()
    print("serving", flush=True)
    threading.Event().wait()


def client(host: str, port: int, connections: int, mib: int) -> None:
    """Connection rate (connect, one line each way, close), then one bulk stream."""
    latencies = []
    started = time.perf_counter()
    for _ in range(connections):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"ping\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk:
                    raise SystemExit(f"{host}:{port}: closed early")
                data += chunk
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    block = b"S" + b"x" * ((1 << 20) - 1)
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=30) as sock:
        for _ in range(mib):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(64):
            answer += chunk
    bulk = time.perf_counter() - t0
    if int(answer or b"0") != mib << 20:
        raise SystemExit(f"{host}:{port}: sink got {answer!r}")
    print(
        json.dumps(
            {
                "conn_per_s": connections / elapsed,
                "p50_ms": statistics.median(latencies) * 1000,
                "mib_per_s": mib / bulk,
            }
        )
    )


# -- the driver (host namespace, root) --------------------------------------------------


def drive(args: argparse.Namespace) -> int:
    import subprocess

    import yaml

    from tests.fixtures.netns import Topology, unavailable
    from tests.fixtures.processes import ManagedProcess

    reason = unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    python = sys.executable
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    topology = Topology()
    workdir = Path(tempfile.mkdtemp(prefix="meshagent-bench-"))
    os.chmod(workdir, 0o755)
    processes: list[ManagedProcess] = []
    try:
        c = topology.add("c")
        p = topology.add("p")
        topology.link(c, f"{CLIENT}/24", p, f"{PROVIDER}/24")
        config = {
            "admin": {"port": 15000},
            "registries": [
                {
                    "name": "local",
                    "type": "local",
                    "config": {"services": {"sink": [{"host": PROVIDER, "port": 7000}]}},
                }
            ],
            "services": [{"name": "sink", "health": {"enabled": False}}],
            "listeners": [{"port": 9000, "service": "sink"}],
            "capture": {"enabled": True, "port": 15001},
            "log_level": "WARNING",
        }
        (workdir / "agent.yaml").write_text(yaml.safe_dump(config))
        (workdir / "agent.yaml").chmod(0o644)
        server = ManagedProcess(
            p.exec_argv([python, __file__, "serve", PROVIDER, "7000", "7999"]),
            log_path=workdir / "server.log",
            env=env,
        )
        processes.append(server.start())
        server.wait_for_line("serving", timeout=10)
        cli = [python, "-m", "agent.cli"]
        subprocess.run(
            c.exec_argv(
                [
                    *cli,
                    *("iptables", "install", "--uid=65534", "--inbound-port=0"),
                    "--exclude-outbound-ports=7999",
                ]
            ),
            env={**os.environ, **env},
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        agent = ManagedProcess(
            c.exec_argv(
                [
                    *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"),
                    *(*cli, "run", "-c", str(workdir / "agent.yaml")),
                ]
            ),
            log_path=workdir / "agent.log",
            env=env,
            cwd=ROOT,
        )
        processes.append(agent.start())
        agent.wait_for_line("meshagent ready", timeout=30)
        paths = {
            "direct": (PROVIDER, 7999),
            "listener": ("127.0.0.1", 9000),
            "capture": (PROVIDER, 7000),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        rng = random.Random(7)
        for round_no in range(args.rounds):
            order = list(paths)
            rng.shuffle(order)
            for name in order:
                host, port = paths[name]
                done = subprocess.run(
                    c.exec_argv(
                        [
                            *(python, __file__, "client", host, str(port)),
                            *(str(args.connections), str(args.mib)),
                        ]
                    ),
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
                results[name].append(json.loads(done.stdout))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
        report(results, args)
        return 0
    finally:
        for process in reversed(processes):
            process.stop()
        topology.close()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(
        f"TCP in network namespaces, {args.rounds} interleaved rounds, "
        f"{args.connections} connections + {args.mib} MiB each; medians"
    )
    print(f"{'path':10} {'conn/s':>9} {'p50 ms':>8} {'MiB/s':>8}   vs direct")
    base_rate, base_p50, base_bw = (
        median("direct", "conn_per_s"),
        median("direct", "p50_ms"),
        median("direct", "mib_per_s"),
    )
    for name in results:
        rate, p50, bw = (
            median(name, "conn_per_s"),
            median(name, "p50_ms"),
            median(name, "mib_per_s"),
        )
        print(
            f"{name:10} {rate:9.0f} {p50:8.3f} {bw:8.0f}   "
            f"rate x{rate / base_rate:.2f}, p50 x{p50 / base_p50:.2f}, MiB/s x{bw / base_bw:.2f}"
        )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        host, port, connections, mib = sys.argv[2:6]
        client(host, int(port), int(connections), int(mib))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--mib", type=int, default=64)
    return drive(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
