"""Paths of the plain ZooKeeper layout."""

from __future__ import annotations

from plugins.zookeeper.layout import Layout


def test_layout_paths() -> None:
    layout = Layout()
    assert layout.providers("a.B") == "/dubbo/a.B/providers"
    assert layout.consumers("a.B") == "/dubbo/a.B/consumers"
    assert layout.mapping("a.B") == "/dubbo/mapping/a.B"
    assert layout.metadata("app", "rev1") == "/dubbo/metadata/app/rev1"
    assert layout.app_instances("app") == "/services/app"
    assert layout.plain_instance("svc/x", "i 1") == "/meshagent/services/svc%2Fx/i+1"
