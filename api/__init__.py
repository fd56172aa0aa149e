"""The FastAPI service, in rooms: ``routes`` and the HTTP wiring (``main``, ``deps``, ``errors``,
``middleware``, ``schemas``), ``parsing`` (requests), ``access`` (keys, CORS, rate limits),
``service`` (the job service) and ``operations`` (workers, metrics, retention).

Nothing here imports torch, ``models`` or ``workers``: the API enqueues jobs by task
name and reads their results through what ``contract`` defines; the workers run the models.
"""
