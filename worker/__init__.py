"""The queue edge (Celery) and training: the runner and the engine."""
