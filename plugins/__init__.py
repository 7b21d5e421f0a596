"""The built-in plugins (registered by entry point, as a third party would)."""

# The switch that runs compiled modules from source lives in the agent package: importing
# it first makes MESHAGENT_PURE_PYTHON=1 apply to a plugin imported on its own (benches).
import agent  # noqa: F401
