"""`make demo`: the product's reason to exist, with no config to write.

Starts a real ZooKeeper, the Java Dubbo provider from the interop peers (built by
`make test`), and the agent with a config that names the provider's service; prints the
`curl` line that calls the Java service through the agent's JSON invocation API and the
Dubbo listener's address; stops everything on Ctrl-C (or SIGTERM).

It reuses the test fixtures that start the same processes for the suite, so the demo runs
exactly what the interop tests check. Logs and the generated agent config are kept in the
work directory it prints.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.agent_process import AgentProcess, dubbo_agent_config, start_agent  # noqa: E402
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, start_provider  # noqa: E402
from tests.fixtures.zookeeper import ZooKeeperServer  # noqa: E402

METHOD = "greet"


def invoke_command(admin_port: int) -> str:
    """The one line a user pastes to call the Java service through the agent."""
    body = json.dumps({"types": ["java.lang.String"], "args": ["world"]})
    url = f"http://127.0.0.1:{admin_port}/v1/invoke/dubbo/{INTERFACE}/{METHOD}"
    return f"curl -s {url} -H 'content-type: application/json' -d {shlex.quote(body)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--admin-port", type=int, default=15000, help="the API port (0: any)")
    parser.add_argument("--listener-port", type=int, default=15020, help="the Dubbo listener")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and config (a temp dir)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="meshagent-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    zookeeper: ZooKeeperServer | None = None
    provider: DubboProvider | None = None
    agent: AgentProcess | None = None
    try:
        print(f"starting ZooKeeper, the Java provider and the agent (logs in {workdir}) ...")
        zookeeper = ZooKeeperServer(workdir / "zookeeper").start()
        provider = start_provider(workdir, registry=zookeeper.url, provider_id="demo-provider")
        config = dubbo_agent_config(f"{zookeeper.host}:{zookeeper.port}", INTERFACE)
        config["listeners"][0]["port"] = args.listener_port
        config["listeners"][0]["name"] = "dubbo-out"
        config["admin"] = {"host": "127.0.0.1", "port": args.admin_port}
        agent = start_agent(workdir, config, name="meshagent-demo")
        print()
        print(f"ZooKeeper            {zookeeper.host}:{zookeeper.port}")
        print(f"Java Dubbo provider  {INTERFACE} at {provider.address}")
        print(f"meshagent API        {agent.base_url}")
        listener = f"dubbo://127.0.0.1:{args.listener_port}"
        print(f"Dubbo listener       {listener}  (point a Dubbo consumer here)")
        print()
        print("Call the Java service through the agent:")
        print(f"  {invoke_command(agent.admin_port)}")
        print()
        print("Ctrl-C stops everything.", flush=True)
        stop.wait()
    finally:
        print("stopping ...", flush=True)
        for process in (agent, provider, zookeeper):
            if process is not None:
                process.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
