# syntax=docker/dockerfile:1
# One image for the API and the workers (compose picks the command).
# Stage 1 builds a virtual environment; stage 2 copies it onto a clean base and
# runs as an unprivileged user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject alone, so editing code does not reinstall torch.
# The monitoring extra is Flower, which the compose `flower` service runs from this image.
COPY pyproject.toml README.md ./
RUN mkdir -p api workers models training \
    && touch api/__init__.py workers/__init__.py models/__init__.py training/__init__.py \
    && pip install ".[monitoring]" \
    && pip uninstall -y dlcv-genserve
COPY api ./api
COPY workers ./workers
COPY models ./models
COPY training ./training
RUN pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/checkpoints /var/lib/genserve/results \
    && chown -R app:app /app /var/lib/genserve
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHECKPOINT_DIR=/app/checkpoints \
    RESULTS_DIR=/var/lib/genserve/results
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
