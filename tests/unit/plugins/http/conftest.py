from __future__ import annotations

from tests.support.http_plugin import install_entry_points

install_entry_points()
