"""Every Celery touchpoint: tasks, signals, the worker process's loop and Runtime, beat."""
