"""Every Celery touchpoint: tasks, signals and the beat scheduler."""
