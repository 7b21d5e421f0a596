"""The agent's own HTTP/2 engine, sans-IO and compiled: HPACK (hpack.py, tables.py) and the
connection (connection.py). Written for relaying: callbacks instead of event objects,
flow control the owner drives, header validation in one pass."""
