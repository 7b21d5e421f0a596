"""Clusters: endpoints, load balancing, health state, outlier ejection. No I/O here."""
