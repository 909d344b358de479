"""Wiring: settings from the environment, the Celery app, logging."""
