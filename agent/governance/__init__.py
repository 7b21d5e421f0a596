"""Traffic governance: rules addressed by the call's five-tuple (docs/governance.md)."""
