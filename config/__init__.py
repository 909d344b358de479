"""The environment and the process shell: settings and their reference, logging with
redaction, the Celery app. Imports nothing from `worker` (tests/test_layers.py)."""
