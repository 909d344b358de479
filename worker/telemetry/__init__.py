"""Metrics, the exporter, event counts and webhooks."""
