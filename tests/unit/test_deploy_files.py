"""docker-compose.yml and Dockerfile, checked by parsing them (no Docker engine needed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL, QUEUE_WEBHOOKS, QUEUES
from stack.services import SHUTDOWN_MARGIN_S, webhook_worker_spec, worker_specs

REPO = Path(__file__).resolve().parents[2]
WORKERS = {f"worker-{queue}": queue for queue in QUEUES}


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


def _option(command: list[str], flag: str) -> str:
    """The value of ``--flag=value`` or ``flag value`` in a command list."""
    for i, part in enumerate(command):
        if part.startswith(f"{flag}="):
            return part.split("=", 1)[1]
        if part == flag:
            return command[i + 1]
    raise AssertionError(f"{flag} not in {command}")


def test_redis_api_and_a_worker_per_queue_with_health_checks(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "api", *WORKERS, "worker-webhooks", "flower"}
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("interval") and check.get("retries"), name


def test_redis_persists_to_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert _mounts(redis)["/data"] == "redis-data"
    assert "redis-data" in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_api_and_workers_share_one_image_and_wait_for_redis(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    for name in (*WORKERS, "worker-webhooks"):
        worker = compose["services"][name]
        assert api["build"] == worker["build"] and api["build"]["context"] == "."
    for service in (api, *(compose["services"][name] for name in (*WORKERS, "worker-webhooks"))):
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert _env(service)["REDIS_URL"].startswith("redis://redis:6379")


def test_api_serves_the_app_on_port_8000(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    assert command[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert command[command.index("--port") + 1] == "8000" and command[command.index("--host") + 1] == "0.0.0.0"
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR}``, as ``docker compose`` resolves them in ``env``."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value
    )


def test_the_api_is_published_on_localhost_unless_bind_says_otherwise(compose: dict[str, Any]) -> None:
    (published,) = compose["services"]["api"]["ports"]
    assert _interpolate(str(published), {}) == "127.0.0.1:8000:8000"
    assert _interpolate(str(published), {"BIND": "0.0.0.0", "PORT": "9000"}) == "0.0.0.0:9000:8000"


def test_the_api_gets_its_access_settings_from_the_shell(compose: dict[str, Any]) -> None:
    api_env = compose["services"]["api"]["environment"]
    for name in ("API_KEYS", "CORS_ALLOW_ORIGINS", "RATE_LIMIT", "RATE_LIMIT_READS"):
        # No value: compose passes the shell's (or .env's) when set, and leaves the setting's default otherwise.
        assert name in api_env and api_env[name] is None, name
    for name in WORKERS:  # the workers need none of them
        assert "API_KEYS" not in _env(compose["services"][name])


@pytest.mark.parametrize("name, queue", sorted(WORKERS.items()))
def test_each_worker_consumes_its_queue_as_make_run_starts_it(compose: dict[str, Any], name: str, queue: str) -> None:
    worker = compose["services"][name]
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "workers.celery_app", "worker"]
    assert _option(command, "-Q") == _env(worker)["WORKER_QUEUES"] == queue
    spec = next(spec for spec in worker_specs() if spec.queue == queue)  # what `make run` starts
    assert _option(command, "--pool") == spec.pool
    assert _option(command, "--concurrency") == str(spec.concurrency)
    assert _option(command, "-n").startswith(f"{queue}@")
    assert f"-d {queue}@$$HOSTNAME" in " ".join(worker["healthcheck"]["test"])  # the name it runs under
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])


def test_the_webhook_worker_runs_as_make_run_starts_it_without_models(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-webhooks"]
    spec = webhook_worker_spec()
    assert worker["command"][:4] == ["celery", "-A", spec.app, "worker"] == spec.command()[2:6]
    assert _option(worker["command"], "-Q") == spec.queue == QUEUE_WEBHOOKS
    assert _option(worker["command"], "--pool") == spec.pool
    assert _option(worker["command"], "--concurrency") == str(spec.concurrency)
    assert f"-A {spec.app} inspect ping -d {spec.queue}@$$HOSTNAME" in " ".join(worker["healthcheck"]["test"])
    # No model: no checkpoints, no GPU; the receivers' hosts and the signing secret come from the shell.
    assert "volumes" not in worker and "deploy" not in worker
    env = _env(worker)
    assert "WEBHOOK_SECRET" in env and env["WEBHOOK_SECRET"] is None
    assert "WEBHOOK_ALLOWED_HOSTS" in env and env["WEBHOOK_ALLOWED_HOSTS"] is None
    # The API checks a job's webhook against the same list when the job is created.
    assert _env(compose["services"]["api"])["WEBHOOK_ALLOWED_HOSTS"] is None
    assert "WEBHOOK_SECRET" not in _env(compose["services"]["api"])


def test_the_gpu_is_reserved_for_the_diffusion_worker(compose: dict[str, Any]) -> None:
    diffusion = compose["services"][f"worker-{QUEUE_DIFFUSION}"]
    assert _env(diffusion)["DEVICE"] == "cuda"
    devices = diffusion["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "--concurrency=1" in diffusion["command"]
    small = compose["services"][f"worker-{QUEUE_SMALL}"]
    assert "deploy" not in small and _env(small)["DEVICE"] == "cpu"
    assert _env(small)["MICRO_BATCH"] == "true"


def test_results_are_shared_and_checkpoints_read_only(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    results = _env(api)["RESULTS_DIR"]
    assert _mounts(api)[results] == "results" and "results" in compose["volumes"]
    for name in WORKERS:
        worker = compose["services"][name]
        assert _env(worker)["RESULTS_DIR"] == results and _mounts(worker)[results] == "results"
        assert _mounts(worker)[_env(worker)["CHECKPOINT_DIR"]] == "./checkpoints:ro"


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


# -- graceful stop and Flower ------------------------------------------------------------------------------


def test_a_stopped_diffusion_worker_requeues_its_job_before_docker_kills_it(compose: dict[str, Any]) -> None:
    diffusion = compose["services"][f"worker-{QUEUE_DIFFUSION}"]
    spec = next(spec for spec in worker_specs() if spec.queue == QUEUE_DIFFUSION)
    # SIGTERM starts Celery's soft shutdown, as in `make run` (stack.services.WorkerSpec.env).
    assert _env(diffusion)["REMAP_SIGTERM"] == spec.env()["REMAP_SIGTERM"] == "SIGQUIT"
    grace = float(_env(diffusion)["SHUTDOWN_GRACE_S"])
    for name in WORKERS:  # docker's SIGKILL comes only after the grace and the requeue
        period = compose["services"][name]["stop_grace_period"]
        assert period.endswith("s") and float(period[:-1]) >= grace + SHUTDOWN_MARGIN_S, name
    # The threads pool cannot cancel a job: the small worker keeps Celery's warm shutdown.
    assert "REMAP_SIGTERM" not in _env(compose["services"][f"worker-{QUEUE_SMALL}"])


def test_flower_runs_from_the_app_image_with_basic_auth_on_localhost_only(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    api = compose["services"]["api"]
    assert flower["build"] == api["build"] and flower["image"] == api["image"]
    assert flower["profiles"] == ["monitoring"]  # only when asked for
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert _env(flower)["REDIS_URL"] == _env(api)["REDIS_URL"]
    assert _env(flower)["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"  # no default password in the file
    (published,) = flower["ports"]
    assert _interpolate(str(published), {}) == "127.0.0.1:5555:5555"
    assert _interpolate(str(published), {"FLOWER_PORT": "6000"}) == "127.0.0.1:6000:5555"
    script = flower["command"][-1]
    assert "celery -A workers.celery_app flower" in script and "--port=5555" in script
    assert "/healthcheck" in " ".join(flower["healthcheck"]["test"])


@pytest.mark.parametrize("password", ["", None])
def test_flower_refuses_to_start_without_a_password(compose: dict[str, Any], password: str | None) -> None:
    command = compose["services"]["flower"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$")  # compose's escape for a literal $
    env = {"PATH": os.environ["PATH"]}
    if password is not None:
        env["FLOWER_BASIC_AUTH"] = password
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 64 and "FLOWER_BASIC_AUTH" in done.stderr


def test_the_image_installs_flower(dockerfile: DockerfileParser) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("flower") for req in extras["monitoring"])
    runs = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    assert '.[monitoring]' in runs
