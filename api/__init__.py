"""The FastAPI service: routes, schemas, settings and error handling.

Nothing here imports torch or ``models``: the API enqueues jobs by task name and
reads their results; the workers run the models.
"""
