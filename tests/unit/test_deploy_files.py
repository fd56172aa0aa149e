"""docker-compose.yml and Dockerfile, checked by parsing them (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=(REPO / "Dockerfile").open("rb"))
    return parser


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else env


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source[:mode]"""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        mounts[target] = ":".join([source, *mode])
    return mounts


def test_three_services_with_health_checks(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "api", "worker"}
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("interval") and check.get("retries"), name


def test_redis_persists_to_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert _mounts(redis)["/data"] == "redis-data"
    assert "redis-data" in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_api_and_worker_share_one_image_and_wait_for_redis(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["build"] == worker["build"] and api["build"]["context"] == "."
    for service in (api, worker):
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert _env(service)["REDIS_URL"].startswith("redis://redis:6379")


def test_api_serves_the_app_on_port_8000(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    assert command[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert command[command.index("--port") + 1] == "8000" and command[command.index("--host") + 1] == "0.0.0.0"
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_is_a_prefork_celery_worker_with_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "workers.celery_app", "worker"]
    assert "--pool=prefork" in command and "--concurrency=1" in command
    assert _env(worker)["DEVICE"] == "cuda"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])


def test_results_are_shared_and_checkpoints_read_only(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    results = _env(api)["RESULTS_DIR"]
    assert _env(worker)["RESULTS_DIR"] == results
    assert _mounts(api)[results] == _mounts(worker)[results] == "results"
    assert "results" in compose["volumes"]
    checkpoints = _env(worker)["CHECKPOINT_DIR"]
    assert _mounts(worker)[checkpoints] == "./checkpoints:ro"


def test_dockerfile_is_multi_stage(dockerfile: DockerfileParser) -> None:
    stages = [i["value"] for i in dockerfile.structure if i["instruction"] == "FROM"]
    assert len(stages) >= 2
    names = [re.split(r"\s+[Aa][Ss]\s+", stage)[-1] for stage in stages]
    assert "build" in names and names[-1] == "runtime"
    copies = [i["value"] for i in dockerfile.structure if i["instruction"] == "COPY"]
    assert any(value.startswith("--from=build") for value in copies)


def test_dockerfile_python_matches_the_project(dockerfile: DockerfileParser) -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = next(
        i["value"]
        for i in dockerfile.structure
        if i["instruction"] == "ARG" and i["value"].startswith("PYTHON_VERSION")
    )
    assert requires.lstrip(">=~") in version.split("=", 1)[1]


def test_the_final_stage_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    structure = dockerfile.structure
    last_from = max(i for i, item in enumerate(structure) if item["instruction"] == "FROM")
    final = structure[last_from:]
    users = [item["value"].strip() for item in final if item["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    runs = " ".join(item["value"] for item in final if item["instruction"] == "RUN")
    assert "useradd" in runs and users[-1].split(":")[0] in runs
    # The results volume is created from the image's directory, so the user must own it.
    results = dockerfile.envs["RESULTS_DIR"]
    assert results in runs and "chown" in runs


def test_the_image_runs_the_api_by_default(dockerfile: DockerfileParser) -> None:
    cmd = json.loads(dockerfile.cmd) if dockerfile.cmd else []
    assert cmd[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    instructions = {i["instruction"]: i["value"] for i in dockerfile.structure}
    assert instructions["EXPOSE"] == "8000"
    assert "/healthz" in instructions["HEALTHCHECK"]


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", ".env"} <= ignored
