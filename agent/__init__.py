"""meshagent: a service-mesh sidecar agent."""

import os

__version__ = "0.1.0"

if os.environ.get("MESHAGENT_PURE_PYTHON") == "1":
    # The modules agent/compiled.py lists run from their source even where a compiled
    # build sits beside them: the interpreted half of "one source tree, two speeds".
    from agent.compiled import prefer_source

    prefer_source()
