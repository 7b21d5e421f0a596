"""Shared by the JSON-invoke interop modules: calling the agent and judging by suite.jsonl."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.fixtures.java_dubbo import INTERFACE

INVOKE = f"/v1/invoke/dubbo/{INTERFACE}"


def invoke_agent_config(
    zookeeper_hosts: str, mode: str, service: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    """An agent with the session ZooKeeper as its registry (``default_mode``: interface or
    application) and the interop interface as a Dubbo service, health checks off (the
    invoke modules' agents; ``service`` and ``top`` add settings)."""
    return {
        "log_level": "INFO",
        **top,
        "registries": [
            {
                "name": "zk",
                "type": "zookeeper",
                "config": {"hosts": zookeeper_hosts, "default_mode": mode},
            }
        ],
        "services": [
            {
                "name": INTERFACE,
                "registry": "zk",
                "protocol": "dubbo",
                "health": {"enabled": False},
                **(service or {}),
            }
        ],
    }


def iso(ms: int) -> str:
    """The agent's form of a java.util.Date (the suite writes epoch milliseconds)."""
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def agent_expectation(case: dict[str, Any]) -> dict[str, Any]:
    """``case["expect"]`` with dates as the agent renders them (ISO 8601, not epoch ms)."""
    expect = copy.deepcopy(case["expect"])
    result = expect.get("result")
    if case["method"] == "addDays" and isinstance(result, int):
        expect["result"] = iso(result)
    elif (
        case["method"] == "echoPerson"
        and isinstance(result, dict)
        and isinstance(result.get("birthday"), int)
    ):
        result["birthday"] = iso(result["birthday"])
    return expect


def call(
    client: httpx.Client, method: str, body: dict[str, Any] | None = None
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(f"{INVOKE}/{method}", json=body if body is not None else {})
    return response, time.monotonic() - started


def outcome(response: httpx.Response) -> dict[str, Any]:
    """The agent's answer in the Java consumer's outcome shape (what ``mismatch`` reads)."""
    body = response.json()
    if response.status_code == 200:
        return {"ok": True, "result": body["result"], "endpoint": body.get("endpoint")}
    exception = body.get("exception") or {}
    return {
        "ok": False,
        "status": response.status_code,
        "exception": exception.get("type"),
        "message": exception.get("message"),
        "timeout": response.status_code == 504,
        "detail": body.get("detail"),
    }


def suite_body(case: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"types": case["types"], "args": case["args"], **extra}
