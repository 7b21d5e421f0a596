"""One large buffered Thrift message against the agent (issue 25, item 1): the agent's CPU
for the message and the worst /healthz latency while it arrives.

A strict-binary CALL whose field 1 is a list<byte> of 4M and 16M elements, written in
64 KiB pieces to a Thrift listener (buffered transport, default max_message_bytes); the
service's only endpoint is a closed port, so the agent answers an exception once the
message is read. A thread probes /healthz every 50 ms meanwhile.

    .venv/bin/python bench/thrift_big_message.py
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_us
from tests.fixtures.agent_process import start_agent
from tests.fixtures.processes import free_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--elements",
        type=int,
        nargs="+",
        default=[4_000_000, 16_000_000],
        help="list<byte> sizes to send, one message each",
    )
    args = parser.parse_args(argv)
    port = free_port()
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"t": [{"host": "127.0.0.1", "port": free_port()}]}},
            }
        ],
        "services": [{"name": "t", "protocol": "thrift", "health": {"enabled": False}}],
        "listeners": [{"port": port, "service": "t", "protocol": "thrift"}],
    }
    agent = start_agent(Path(tempfile.mkdtemp(prefix="bench-thrift-big-")), config)
    try:
        for count in args.elements:
            head = struct.pack(">iI", -2147418111, 1) + b"m" + struct.pack(">i", 1)
            wire = head + b"\x0f\x00\x01\x03" + struct.pack(">i", count)
            wire += b"\x07" * count + b"\x00"
            worst = [0.0]
            stop = threading.Event()

            def probe(stop: threading.Event = stop, worst: list[float] = worst) -> None:
                with agent.client(timeout=120) as client:
                    while not stop.is_set():
                        started = time.monotonic()
                        client.get("/healthz")
                        worst[0] = max(worst[0], time.monotonic() - started)
                        stop.wait(0.05)

            prober = threading.Thread(target=probe)
            prober.start()
            before = cpu_us(agent.pid)
            with socket.create_connection(("127.0.0.1", port)) as sock:
                for at in range(0, len(wire), 65536):
                    sock.sendall(wire[at : at + 65536])
                sock.settimeout(60)
                answered = b"no provider" in sock.recv(65536)
            spent_s = (cpu_us(agent.pid) - before) / 1e6
            stop.set()
            prober.join()
            print(
                f"{count:,} elements ({len(wire):,} B): agent CPU {spent_s:.2f} s, "
                f"worst /healthz {worst[0] * 1000:.0f} ms, answered: {answered}"
            )
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
