# syntax=docker/dockerfile:1
# An image per role, each with only its role's dependencies (pyproject.toml's extras):
#   api     `docker build --target api .`: the API, and the webhook worker (`.[api,webhooks]`); no torch.
#           The default target (the last stage), as before the split.
#   worker  `docker build --target worker .`: the model workers and Flower (`.[worker,monitoring]`), with the
#           CUDA build of torch (PyPI's Linux wheel, which brings the CUDA libraries; the host needs the NVIDIA
#           driver and container toolkit only for the GPU worker, a CPU worker runs it as it is).
# The build stages make a virtual environment each; the runtime stages copy it onto a clean base and run as an
# unprivileged user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject alone (the project, with no code yet, is installed and removed again), so
# editing code does not reinstall them; the project itself is installed with --no-deps once its code is copied,
# and a role's image holds only the packages that role runs.
COPY pyproject.toml README.md ./

FROM base AS build-api
RUN pip install ".[api,webhooks]" \
    && pip uninstall -y dlcv-genserve
# The webhook worker (workers/webhook_app.py) imports neither torch nor a model: it runs from this image.
COPY contract ./contract
COPY api ./api
COPY workers ./workers
RUN pip install --no-deps . \
    && if pip list 2>/dev/null | grep -iE '^(torch|torchvision|nvidia-)'; then echo 'torch in the api image' >&2; exit 1; fi

FROM base AS build-worker
# torch first and pinned, in a layer of its own (gigabytes, changed only with the pin).
RUN pip install torch==2.14.1 torchvision==0.29.1
# Flower (the compose `flower` service, an operator's tool) runs from this image: `-A workers.celery_app`.
RUN pip install ".[worker,monitoring]" \
    && pip uninstall -y dlcv-genserve
COPY contract ./contract
COPY workers ./workers
COPY models ./models
RUN pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim AS runtime
# RESULTS_DIR is the results folder of RESULTS_STORE=local (one host, `docker run` with a volume there); compose
# sets RESULTS_STORE=s3, and the API and the workers share only Redis and the bucket.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/checkpoints /var/lib/genserve/results \
    && chown -R app:app /app /var/lib/genserve
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHECKPOINT_DIR=/app/checkpoints \
    RESULTS_DIR=/var/lib/genserve/results
WORKDIR /app

FROM runtime AS worker
COPY --from=build-worker /opt/venv /opt/venv
USER app
# compose names the queue (-Q), pool and concurrency per service; alone, the worker consumes WORKER_QUEUES.
CMD ["celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO"]

FROM runtime AS api
COPY --from=build-api /opt/venv /opt/venv
USER app
EXPOSE 8000
# uvicorn believes X-Forwarded-For only from these proxies; unset, it would believe 127.0.0.1's (see docs/service.md).
ENV FORWARDED_ALLOW_IPS=""
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
# --http: uvicorn's h11 protocol plus a deadline for a request's headers (HEADER_TIMEOUT_S; api/transport.py).
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--http", "api.transport:HeaderTimeoutProtocol"]
