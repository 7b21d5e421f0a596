"""What an endpoint's host and an instance id may be, checked where they enter: the
registration API, the embedded registry's config, and every registry's updates before a
cluster takes them (a junk entry in ZooKeeper or Nacos is input like any other).

A host is an IP address or a DNS name whose IDNA form is valid; an instance id is
printable text of bounded length without a path separator. Each check returns the
reason a value is refused, or None.
"""

from __future__ import annotations

import ipaddress
import re

from agent.discovery.types import Add, Instance, Reset, Update

MAX_HOST = 253  # a DNS name's limit (RFC 1035), in its ASCII (IDNA) form
MAX_INSTANCE_ID = 255

# A label after IDNA encoding: letters, digits, hyphens (not first or last); underscores
# too, which DNS allows outside host names and registries carry (SRV-style names).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an endpoint's host, or None when it can."""
    if not host:
        return "empty host"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "host is neither an IP address nor a valid (IDNA) host name"
    if len(ascii_host) > MAX_HOST:
        return f"host name longer than {MAX_HOST} characters"
    labels = ascii_host.removesuffix(".").split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "host is neither an IP address nor a valid host name"
    return None


def instance_id_problem(instance_id: str) -> str | None:
    """Why ``instance_id`` cannot name an instance, or None when it can."""
    if not instance_id:
        return "empty instance id"
    if len(instance_id) > MAX_INSTANCE_ID:
        return f"instance id longer than {MAX_INSTANCE_ID} characters"
    if not instance_id.isprintable() or instance_id != instance_id.strip():
        return "instance id holds control characters or surrounding spaces"
    if "/" in instance_id or "\\" in instance_id:
        return "instance id holds a path separator"
    return None


def checked_host(host: str) -> str:
    """``host``, or ValueError saying why it cannot be one (a pydantic AfterValidator)."""
    problem = host_problem(host)
    if problem is not None:
        raise ValueError(problem)
    return host


def checked_instance_id(instance_id: str) -> str:
    """``instance_id``, or ValueError saying why it cannot be one (an AfterValidator)."""
    problem = instance_id_problem(instance_id)
    if problem is not None:
        raise ValueError(problem)
    return instance_id


def instance_problem(instance: Instance) -> str | None:
    """Why a registry's instance cannot be an endpoint, or None. Registries' own instance
    ids are kept as they are (Dubbo's are URLs, Nacos's carry ``#`` and ``@@``)."""
    if not 1 <= instance.port <= 65535:
        return f"port {instance.port} out of range"
    return host_problem(instance.host)


def screen(update: Update) -> tuple[Update | None, list[tuple[Instance, str]]]:
    """``update`` without the instances a cluster must not take, and each one dropped with
    its reason. None: nothing left to apply (an Add of a junk instance)."""
    if isinstance(update, Reset):
        kept: list[Instance] = []
        dropped: list[tuple[Instance, str]] = []
        for instance in update.instances:
            problem = instance_problem(instance)
            if problem is None:
                kept.append(instance)
            else:
                dropped.append((instance, problem))
        if not dropped:
            return update, []
        return Reset(update.revision, tuple(kept)), dropped
    if isinstance(update, Add):
        problem = instance_problem(update.instance)
        if problem is not None:
            return None, [(update.instance, problem)]
    return update, []
