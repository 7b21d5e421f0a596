"""Plugs the configured observers and the call-context policy into the agent's hub.

Tracing is imported only when enabled, so an agent without the ``tracing`` extra runs as
long as its config leaves tracing off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.calls import Calls
from agent.config import TelemetryConfig
from agent.errors import ConfigError
from agent.telemetry.access_log import AccessLog
from agent.telemetry.call_metrics import CallMetrics
from agent.telemetry.context import CallContext

if TYPE_CHECKING:
    from agent.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    context: CallContext | None = None
    metrics: CallMetrics | None = None
    tracing: Tracing | None = None
    access_log: AccessLog | None = None

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.access_log is not None:
            self.access_log.close()


def install(calls: Calls, config: TelemetryConfig, worker: str = "") -> Telemetry:
    """``worker``: the worker process's id (docs/workers.md), on spans and access-log lines."""
    """Build what ``config`` enables and plug it into ``calls``.

    The context policy goes first among policies (a loop is refused before governance
    spends a token on it) and first among observers (its headers are the base that
    tracing adds to)."""
    telemetry = Telemetry()
    if config.context.enabled:
        context = telemetry.context = CallContext(
            config.context.max_hops, config.context.max_timeout_s
        )
        calls.policies.insert(0, context)
        calls.observers.append(context)
    if config.tracing.enabled:
        try:
            from agent.telemetry.tracing import Tracing
        except ImportError as exc:
            raise ConfigError(
                [f"telemetry.tracing: needs the tracing extra (meshagent[tracing]): {exc}"]
            ) from None
        telemetry.tracing = Tracing(config.tracing, calls.app, worker=worker)
        calls.observers.append(telemetry.tracing)
    if config.metrics.enabled:
        telemetry.metrics = CallMetrics(config.metrics.max_methods)
        calls.observers.append(telemetry.metrics)
    if config.access_log.enabled:
        try:
            telemetry.access_log = AccessLog(
                config.access_log.path, config.access_log.sample_ratio, worker=worker
            )
        except OSError as exc:
            raise ConfigError([f"telemetry.access_log.path: {exc}"]) from None
        calls.observers.append(telemetry.access_log)
    return telemetry
