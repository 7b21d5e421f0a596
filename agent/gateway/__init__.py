"""The cross-data-center gateway (docs/gateway.md)."""
