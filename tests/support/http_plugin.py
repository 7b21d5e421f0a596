"""The ``http`` plugin's entry points for tests, until pyproject.toml registers them.

``http_entry_points/`` holds a dist-info with the same names and values pyproject.toml
will have, so the plugin loader accepts both once it does; agent processes get it through
PYTHONPATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

ENTRY_POINTS = Path(__file__).resolve().parent / "http_entry_points"


def install_entry_points() -> None:
    if str(ENTRY_POINTS) not in sys.path:
        sys.path.append(str(ENTRY_POINTS))
