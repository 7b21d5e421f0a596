from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Iterator

import pytest

from agent import plugins
from agent.errors import PluginError
from agent.plugins import EmptyConfig, Plugin, PluginKind, load


@pytest.fixture
def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[importlib.metadata.EntryPoint]]:
    """Entry points of the kind under test come from this list (others stay real)."""
    extra: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        if group == PluginKind.HEALTH_CHECKER.value:
            return [*real(group=group), *extra]
        return list(real(group=group))

    module = types.ModuleType("fake_plugins")
    module.GOOD = Plugin(PluginKind.HEALTH_CHECKER, "good", EmptyConfig, lambda c: "built")  # type: ignore[attr-defined]
    module.NOT_A_PLUGIN = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_plugins", module)
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(plugins, "_loaded", {})
    yield extra


def ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, PluginKind.HEALTH_CHECKER.value)


def test_builtins_register_through_entry_points() -> None:
    assert set(plugins.installed(PluginKind.LB_POLICY)) >= {
        "round_robin",
        "weighted_random",
        "least_request",
        "consistent_hash",
    }
    assert "local" in plugins.installed(PluginKind.REGISTRY)
    assert "tcp" in plugins.installed(PluginKind.PROTOCOL)


def test_load_returns_the_plugin_and_caches_it() -> None:
    plugin = load(PluginKind.REGISTRY, "local")
    assert plugin.name == "local"
    assert load(PluginKind.REGISTRY, "local") is plugin


def test_plugin_is_loaded_only_when_named(
    fake_entry_points: list[importlib.metadata.EntryPoint],
) -> None:
    fake_entry_points.append(ep("broken", "no_such_module_anywhere:PLUGIN"))
    # Listing does not import; only load does, and it says what failed.
    assert "broken" in plugins.installed(PluginKind.HEALTH_CHECKER)
    with pytest.raises(PluginError, match=r"'broken' .* failed to load: No module named"):
        load(PluginKind.HEALTH_CHECKER, "broken")


def test_unknown_name_lists_installed(
    fake_entry_points: list[importlib.metadata.EntryPoint],
) -> None:
    fake_entry_points.append(ep("good", "fake_plugins:GOOD"))
    with pytest.raises(PluginError, match=r"unknown .* plugin 'tpc'; installed: ") as info:
        load(PluginKind.HEALTH_CHECKER, "tpc")
    listed = str(info.value).rsplit("installed: ", 1)[1].split(", ")
    assert listed == sorted(listed) and {"good", "tcp"} <= set(listed)


def test_entry_point_must_be_a_plugin_of_its_kind_and_name(
    fake_entry_points: list[importlib.metadata.EntryPoint],
) -> None:
    fake_entry_points.append(ep("odd", "fake_plugins:NOT_A_PLUGIN"))
    fake_entry_points.append(ep("misnamed", "fake_plugins:GOOD"))
    with pytest.raises(PluginError, match="is not a HEALTH_CHECKER Plugin named 'odd'"):
        load(PluginKind.HEALTH_CHECKER, "odd")
    with pytest.raises(PluginError, match="named 'misnamed'"):
        load(PluginKind.HEALTH_CHECKER, "misnamed")


def test_duplicate_names_are_refused(
    fake_entry_points: list[importlib.metadata.EntryPoint],
) -> None:
    fake_entry_points.append(ep("tcp", "fake_plugins:GOOD"))
    with pytest.raises(
        PluginError, match=r"two meshagent\.health_checkers plugins are named 'tcp'"
    ):
        plugins.installed(PluginKind.HEALTH_CHECKER)


def test_build_validates_config_before_the_factory_runs() -> None:
    calls: list[object] = []
    plugin = Plugin(PluginKind.LB_POLICY, "x", EmptyConfig, calls.append)
    with pytest.raises(plugins.ConfigError) as info:
        plugin.build({"unexpected": 1}, "services[0].lb.config")
    assert info.value.errors == ["services[0].lb.config.unexpected: Extra inputs are not permitted"]
    assert calls == []
