"""Shared fixtures: the raw datasets and a small hw2_data tree built from them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL_LIMIT = 12  # images per split in the shared small build: enough to cover every code path


@pytest.fixture(scope="session")
def data_source() -> Path:
    """The raw datasets: $DATA_SOURCE, else ``<repo>/../shared/data``."""
    path = Path(os.environ.get("DATA_SOURCE") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"raw datasets not found at {path}; set DATA_SOURCE to the shared data folder")
    return path


@pytest.fixture(scope="session")
def small_hw2_data(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four parts built with seed 0 and ``SMALL_LIMIT`` images per split."""
    from training.data.build import build_all

    out = tmp_path_factory.mktemp("hw2_small") / "hw2_data"
    build_all(data_source, out, seed=0, limit=SMALL_LIMIT, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's server mode) on 127.0.0.1, for the S3 results store."""
    from stack.processes import free_port, spawn, stop, wait_for

    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 30, "the S3 server (moto)", alive=lambda: server.poll() is None)
        yield url
    finally:
        stop(server)


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # an S3 error document: the server is up
    except OSError:
        return False
    return True


S3_CREDENTIALS = {"S3_ACCESS_KEY_ID": "test-key", "S3_SECRET_ACCESS_KEY": "test-secret", "S3_REGION": "us-east-1"}


def create_bucket(endpoint: str, name: str) -> str:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_CREDENTIALS["S3_REGION"],
        aws_access_key_id=S3_CREDENTIALS["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["S3_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on ``s3_endpoint`` for one test."""
    import uuid

    return create_bucket(s3_endpoint, f"genserve-{uuid.uuid4().hex[:12]}")
