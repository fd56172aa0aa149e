"""What the API and the workers must agree on, in one torch-free place.

Both sides import this package and nothing else of each other: task and queue
names, Redis keys, the served roles and their checkpoints, the digit model's
public constants, result file names, the public job models, the shared
settings, the Celery configuration, the worker registration, the results store
(a local folder or an S3 bucket), the upload format, webhook rules and the task
metrics' layout. It imports neither torch nor FastAPI (boto3 only when an S3
store is made), so an API-only install stays small.
"""
