"""/readyz counts a model only once a worker has run it once: loaded is not enough."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app
from contract.roles import SERVED
from workers.config import WorkerSettings
from workers.heartbeat import Heartbeat
from workers.registry import Registry

from .stack import OPEN_ACCESS, Stack

pytestmark = pytest.mark.integration


def test_the_running_service_has_every_model_warm(service: Stack) -> None:
    workers = service.client.get("/models").json()["workers"]
    warm = {model["role"] for worker in workers for model in worker["models"] if model["warm"]}
    assert warm == set(SERVED)
    ready = service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    (models,) = [check for check in ready.json()["checks"] if check["name"] == "models"]
    assert models["ok"] and "warmed up" in models["detail"]


def test_a_worker_is_ready_only_once_its_models_are_warm(
    empty_redis_db: str, plumbing_checkpoints: Path, tmp_path: Path
) -> None:
    """A real registry and heartbeat in this process, published before and after its warm-up."""
    url = empty_redis_db
    settings = WorkerSettings(_env_file=None, redis_url=url, checkpoint_dir=plumbing_checkpoints, device="cpu")
    registry = Registry(settings)
    registry.load()
    heartbeat = Heartbeat(registry, settings)
    api_settings = Settings(_env_file=None, redis_url=url, results_dir=tmp_path, checkpoint_dir=tmp_path, **OPEN_ACCESS)
    try:
        heartbeat.beat()
        with TestClient(create_app(api_settings)) as api:
            cold = api.get("/readyz")
            assert cold.status_code == 503, cold.text
            (models,) = [check for check in cold.json()["checks"] if check["name"] == "models"]
            assert not models["ok"] and "not warm yet" in models["detail"]
            assert all(f"({name})" in models["detail"] for name in SERVED.values()), models["detail"]
            assert "not loaded" not in models["detail"]

            registry.warm_up(on_warm=heartbeat.beat)
            warm = api.get("/readyz")
            assert warm.status_code == 200, warm.text
    finally:
        heartbeat.stop()
        torch.set_flush_denormal(False)  # loading set it for this whole test process
