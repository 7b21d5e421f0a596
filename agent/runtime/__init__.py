"""The runtime: asyncio on uvloop. The only layer that touches sockets."""
