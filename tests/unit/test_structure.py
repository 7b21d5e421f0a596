"""The source tree's shape: no import circles within a package, a test module per module.

Both read the source (ast), so they hold for the compiled build as for the interpreted one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "plugins")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours ``name`` imports, at module level or inside functions (a lazy
    import is still a dependency), except under ``if TYPE_CHECKING``. ``from package import
    module`` depends on the module, not on the package's ``__init__``."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    ours = set()
    for imported in found:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        if imported and imported != name:
            ours.add(imported)
    return ours


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return circles


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert import_circles(graph) == []


def test_the_circle_finder_finds_a_lazy_circle() -> None:
    # What the test above relies on: a circle through a function-level import is found.
    graph = {"p.protocol": {"p.proxy"}, "p.proxy": {"p.protocol"}, "p.config": set()}
    assert import_circles(graph) == [["p.protocol", "p.proxy"]]


# Modules exercised only through tests of another name, each with where and why.
WITHOUT_OWN_TEST_MODULE = {
    "agent/runtime/agent.py": "the agent's lifecycle: tests/integration/test_agent_process.py "
    "and every integration suite run it as a process",
    "agent/runtime/protocols.py": "the interfaces and the listener context, no logic of its "
    "own: every listener test builds a ListenerContext",
    "agent/runtime/handover.py": "the hand-over of a sniffed connection: "
    "tests/unit/runtime/test_capture.py and test_inbound.py",
    "agent/runtime/upstream.py": "connect with retry: tests/unit/runtime/test_tcp_proxy.py",
    "agent/runtime/tcp_health.py": "tests/unit/runtime/test_health.py",
    "agent/api/models.py": "the API's pydantic models: tests/unit/api/test_app.py and the "
    "Schemathesis run (tests/integration/test_api_contract.py) through the API",
    "agent/api/limits.py": "the API guard (remote writes refused, body limits): "
    "tests/unit/api/test_app.py and test_http1.py through the server",
    "agent/api/problems.py": "FastAPI's errors as problem+json: tests/unit/api/test_app.py",
    "agent/api/invoke_http.py": "the HTTP invocation route: tests/integration/http/test_invoker.py",
    "plugins/etcd/client.py": "aetcd calls: tests/integration/etcd (a real etcd)",
    "plugins/etcd/registry.py": "tests/integration/etcd, tests/contract (a real etcd)",
    "plugins/etcd/config_source.py": "tests/contract/test_config_source_contract.py (a real etcd)",
    "plugins/nacos/client.py": "the only module importing the SDK: tests/integration/nacos "
    "(a real Nacos)",
    "plugins/zookeeper/registry.py": "tests/integration/zookeeper, tests/contract (a real "
    "ZooKeeper)",
    "plugins/zookeeper/session.py": "kazoo's session: tests/integration/zookeeper, "
    "tests/interop/test_registry_faults.py",
    "plugins/zookeeper/watches.py": "kazoo watches: tests/integration/zookeeper",
    "plugins/zookeeper/feeds.py": "tests/unit/plugins/zookeeper/test_interface_feed.py and "
    "test_application_level.py, tests/integration/zookeeper",
    "plugins/zookeeper/config_source.py": "tests/contract/test_config_source_contract.py "
    "(a real ZooKeeper)",
    "plugins/dubbo/protocol.py": "the plugin's runtime part: tests/interop/test_dubbo_proxy.py "
    "and test_dubbo_invoke.py (real Java providers)",
    "plugins/dubbo/health.py": "the heartbeat checker against a Java provider: "
    "tests/interop/test_dubbo_codec_java.py",
    "plugins/grpc/protocol.py": "tests/integration/grpc (grpc-go and Python peers)",
    "plugins/http/protocol.py": "tests/integration/http (uvicorn and nginx providers)",
    "plugins/http/h11_pool.py": "tests/integration/http/test_invoker.py, and through "
    "tests/unit/plugins/http/test_h1_session.py",
    "plugins/thrift/protocol.py": "the plugin's runtime part: tests/integration/thrift "
    "(thriftpy2 peers) and tests/interop/test_thrift_java.py",
}


def _test_module_of(source: Path) -> list[Path]:
    """Where a module's own tests are: tests/unit mirroring its path (agent/ dropped), or
    the integration suite of its plugin."""
    relative = source.relative_to(ROOT)
    parts = relative.parts[1:-1] if relative.parts[0] == "agent" else relative.parts[:-1]
    name = f"test_{source.name}"
    places = [ROOT / "tests" / "unit" / Path(*parts) / name]
    if relative.parts[0] == "plugins":
        places.append(ROOT / "tests" / "integration" / relative.parts[1] / name)
    return places


def test_every_module_has_a_test_module_of_its_name() -> None:
    missing = []
    for path in _modules().values():
        if path.name == "__init__.py":
            continue
        key = str(path.relative_to(ROOT))
        has_own = any(place.exists() for place in _test_module_of(path))
        if has_own and key in WITHOUT_OWN_TEST_MODULE:
            missing.append(f"{key}: has a test module now; take it off the allowlist")
        elif not has_own and key not in WITHOUT_OWN_TEST_MODULE:
            missing.append(f"{key}: no {_test_module_of(path)[0].relative_to(ROOT)}")
    assert missing == []


def test_the_allowlist_names_modules_that_exist() -> None:
    assert [key for key in WITHOUT_OWN_TEST_MODULE if not (ROOT / key).exists()] == []
