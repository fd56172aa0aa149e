"""Celery workers: load the checkpoints once per process and run the models.

Importing this package (or ``workers.config``) pulls in neither torch nor the
models; only ``workers.tasks`` and what it loads do. What the workers share with
the API (task names, keys, the public job) comes from ``contract``.
"""
