"""The whole service on one machine (``make run``): a local Redis, a worker per queue, the API, supervised.

Also what the end-to-end tests and ``python -m bench`` start their stacks with.
Not part of the API or the workers: neither imports it.
"""
