"""Telemetry: metrics now; traces and access logs arrive with the observability work."""
