"""Which registered Dubbo services a consumer's ServiceKey selects, as Dubbo's UrlUtils.isMatch.

A key is ``ServiceKey(name=interface, attributes={"version": ..., "group": ...})``. Absent and
empty are the same in Dubbo (empty parameters are dropped from URLs), so an unversioned consumer
only sees unversioned providers. ``*`` matches anything; a consumer group may list several
groups separated by commas.
"""

from __future__ import annotations

ANY = "*"


def group_matches(wanted: str, actual: str) -> bool:
    if wanted in (ANY, actual):
        return True
    return bool(wanted) and actual in (g.strip() for g in wanted.split(","))


def version_matches(wanted: str, actual: str) -> bool:
    return wanted in (ANY, actual)


def enabled(params_enabled: str | None, wanted_enabled: str) -> bool:
    """A provider disabled by an operator (``enabled=false``) is hidden unless asked for ``*``."""
    if wanted_enabled == ANY:
        return True
    return (params_enabled or "true").lower() != "false"
