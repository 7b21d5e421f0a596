"""Which modules are compiled with mypyc, and whether this process runs them compiled.

One source tree, two speeds: setup.py compiles the modules listed here into C extensions
when a C compiler is there and ``MESHAGENT_PURE_PYTHON`` is not set; otherwise the same
modules run interpreted, with the same behaviour. Chosen by profile (docs/benchmarks.md,
issue 20): the codecs, the per-request code of the listeners and the API, the calls hub,
call metrics, the LB policies. Left interpreted, and why:

- agent/call_hooks.py: the call hooks' base classes and ``CallRejected``, subclassed by
  interpreted code (tests, plugins): a compiled class's methods check ``self`` by exact
  type and would refuse the subclass (the compiled policy and observer classes derive
  from them: a native class may have one non-native base, hence ``CallHook``);
- agent/api/ndjson.py: an async generator (mypyc does not compile them);
- plugins/dubbo/hessian2/values.py: ``JavaLong`` subclasses ``int`` (a builtin);
- pydantic models (mypyc cannot compile a class whose attributes hold ``Field``s): the
  compiled modules' models live in modules of their own (plugins/dubbo/options.py,
  plugins/dubbo/invoke_body.py, agent/cluster/lb_config.py), as do the configuration and
  management modules, which run once or rarely.

Compiled after a first failure, each fixed at its cause (docs/benchmarks.md, issues 19
and 20): agent/runtime/multiplex.py (``MultiplexCodec`` allows interpreted subclasses;
its ``max_id`` and ``unit`` are class variables), plugins/dubbo/strategies.py (no
``await`` inside a ``finally``: compiled, the exception pending there was lost across the
suspension), the listeners and their client sides.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED: tuple[str, ...] = (
    # codecs
    "plugins/dubbo/hessian2/encoder.py",
    "plugins/dubbo/hessian2/decoder.py",
    "plugins/dubbo/frame.py",
    "plugins/dubbo/body.py",
    "plugins/dubbo/generic.py",
    "plugins/thrift/codec.py",
    "plugins/thrift/base.py",
    "plugins/grpc/framing.py",
    "agent/h2/hpack.py",
    "agent/h2/connection.py",
    "agent/telemetry/propagation.py",
    # the API's server and fast routes; the Dubbo invocation and its upstream
    "agent/api/http1.py",
    "agent/api/fast_routes.py",
    "agent/api/problem_details.py",
    "plugins/dubbo/invoker.py",
    "plugins/dubbo/strategies.py",
    "plugins/dubbo/upstream.py",
    "agent/runtime/writebatch.py",
    # the listeners' connections and the upstream pools
    "agent/runtime/client_connection.py",
    "agent/runtime/multiplex.py",
    "agent/runtime/tcp_proxy.py",
    "plugins/dubbo/proxy.py",
    "plugins/thrift/proxy.py",
    "plugins/thrift/upstream.py",
    "plugins/http/calls.py",
    "plugins/http/routing.py",
    "plugins/http/headers.py",
    "plugins/http/h1_exchange.py",
    "plugins/http/h2_exchange.py",
    "plugins/http/h1_listener.py",
    "plugins/http/h1_upstream.py",
    "plugins/http/h2_listener.py",
    "plugins/grpc/h2relay.py",
    "agent/h2/upstream.py",
    "agent/runtime/deadlines.py",
    # the calls hub, telemetry and governance decisions, balancing
    "agent/calls.py",
    "agent/exchange.py",
    "agent/telemetry/call_metrics.py",
    "agent/telemetry/recent_failures.py",
    "agent/telemetry/exposition.py",
    "agent/telemetry/tracing.py",
    "agent/telemetry/context.py",
    "agent/governance/policy.py",
    "agent/governance/breaker.py",
    "agent/governance/ratelimit.py",
    "agent/governance/retry.py",
    "agent/governance/split.py",
    "agent/governance/index.py",
    "agent/governance/table.py",
    "agent/cluster/lb.py",
    "agent/cluster/locality.py",
    # the gateway link (its byte relay)
    "agent/gateway/link.py",
    "agent/cluster/cluster.py",
    "agent/cluster/host.py",
    "agent/cluster/outlier.py",
)


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules' ``.py`` files, ahead of their compiled builds."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self.sources = {module_name(path): root / path for path in COMPILED}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None or not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def prefer_source() -> None:
    """Run the listed modules interpreted (``MESHAGENT_PURE_PYTHON=1``, agent/__init__.py)."""
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def stale_builds() -> list[str]:
    """Listed modules whose compiled build is older than their source (rebuild: ``make``)."""
    root = Path(__file__).resolve().parent.parent
    stale = []
    for path in COMPILED:
        source = root / path
        builds = list(source.parent.glob(f"{source.stem}.*.so"))
        newest = max((b.stat().st_mtime for b in builds), default=None)
        if newest is not None and source.exists() and newest < source.stat().st_mtime:
            stale.append(module_name(path))
    return stale


def compiled_modules() -> dict[str, bool]:
    """Each listed module (imported now), and whether it runs as a C extension."""
    found: dict[str, bool] = {}
    for path in COMPILED:
        name = module_name(path)
        try:
            module = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue  # an optional plugin's dependency is not installed
        origin = getattr(module, "__file__", "") or ""
        found[name] = origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return found
