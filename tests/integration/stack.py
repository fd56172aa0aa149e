"""Starting the service for the end-to-end tests: real Celery worker processes and uvicorn over HTTP.

Each ``Stack`` is one API (uvicorn in a thread of the test process, real HTTP)
and the workers ``make run`` starts (one per queue, ``stack.services.worker_specs``,
as separate ``celery worker`` processes) on one Redis database; stacks on
different databases keep their queues and results apart. Workers take seconds
to start (they load and warm up every model), an API app a fraction of one: a
test that needs other API settings puts ``another_api`` in front of an existing
stack's workers rather than starting a stack.
"""

from __future__ import annotations

import base64
import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import redis
import uvicorn

from api.config import Settings
from api.main import create_app
from contract.digits import DISTILLED_STEPS
from contract.queues import QUEUES
from contract.roles import DIGIT_STUDENT_CHECKPOINT
from stack.processes import free_port
from stack.services import LocalStack, webhook_worker_spec, worker_specs

REPO = Path(__file__).resolve().parents[2]
SERVED = ("dcgan-A", "dcgan-B", "ddpm-digits", "dann-svhn", "dann-usps")
PLUMBING_T = 40  # diffusion timesteps of the untrained test model

# The tests send bursts from one address, without keys: a stack gets keys and rate limits only when a
# test asks for them, whatever the environment says.
OPEN_ACCESS: dict[str, object] = {"api_keys": "", "rate_limit": "off", "rate_limit_reads": "off"}

# Webhooks to receivers on this machine (tests/integration/test_webhooks.py): the loopback address is
# listed as an IP, which is what lets a delivery reach it (contract.webhooks).
WEBHOOK_HOST = "127.0.0.1"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"genserve-test-webhook-key-32byte").decode()
PLUMBING_WORKER_ENV = {
    "WEBHOOK_ALLOWED_HOSTS": WEBHOOK_HOST,
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "WEBHOOK_BACKOFF_S": "1",
    "WEBHOOK_TIMEOUT_S": "5",
}

# Small limits, so the bad-input tests send small bodies.
PLUMBING_LIMITS: dict[str, object] = {
    "max_files": 8,
    "max_file_bytes": 200_000,
    "max_body_bytes": 1_000_000,
    "max_image_pixels": 1_000_000,
    "max_digit_images": 100,
    "default_wait_s": 60.0,
    "max_wait_s": 90.0,
    "webhook_allowed_hosts": WEBHOOK_HOST,
}


def require_checkpoints(directory: Path, *names: str) -> None:
    """Skip the calling test, saying which, when any of ``names`` is not in ``directory``."""
    import pytest

    missing = [name for name in names if not (directory / f"{name}.json").is_file()]
    if missing:
        pytest.skip(f"checkpoints {missing} are not in {directory}: train them (see README) for this content check")


def write_plumbing_checkpoints(directory: Path) -> Path:
    """Untrained, small versions of every served network, in the shipped checkpoint format."""
    import torch

    from models.checkpoints import save_model
    from models.dann import DANN
    from models.dcgan import DCGANConfig, Generator
    from models.scheduler import NoiseScheduleConfig
    from models.unet import ConditionalUNet, UNetConfig

    torch.manual_seed(0)
    for variant in ("A", "B"):
        generator = Generator(DCGANConfig(variant=variant, ngf=8))
        # DCGAN's N(0, 0.02) init draws flat gray; variance-keeping weights draw
        # visibly different noise per seed, which the seed tests need.
        for module in generator.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):
                taps = module.in_channels * (16 if module.stride[0] == 1 else 4)
                torch.nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / taps))
        save_model(generator, directory, f"dcgan-{variant}", {"training": {"hardware": "none (untrained)"}})
    # A short schedule keeps the full ancestral (ddpm) sampler to seconds on a CPU.
    schedule = NoiseScheduleConfig(num_train_timesteps=PLUMBING_T).to_dict()
    # A student beside it serves sampler=distilled; its card's verdict keeps the guided default.
    student = {"checkpoint": DIGIT_STUDENT_CHECKPOINT, "steps": DISTILLED_STEPS, "default": False}
    save_model(
        ConditionalUNet(UNetConfig(base_channels=8)),
        directory,
        "ddpm-digits",
        {"schedule": schedule, "sampling": {"guidance_scale": 1.0, "student": student}},
    )
    save_model(
        ConditionalUNet(UNetConfig(base_channels=8)), directory, DIGIT_STUDENT_CHECKPOINT, {"schedule": schedule}
    )
    for target in ("svhn", "usps"):
        save_model(DANN(), directory, f"dann-{target}", {"metrics": {"target_accuracy": None}})
    return directory


@dataclass
class Stack:
    client: httpx.Client
    base_url: str
    redis_url: str
    results_dir: Path
    checkpoint_dir: Path
    processes: LocalStack
    logs: dict[str, Path] = field(default_factory=dict)  # queue -> its worker's log

    @property
    def workers(self) -> dict[str, subprocess.Popen]:
        return self.processes.workers

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # leave the test process's handlers alone
        pass


def api_settings(redis_url: str, results_dir: Path, checkpoint_dir: Path, **limits: object) -> Settings:
    """The settings of a test API: open access (``OPEN_ACCESS``) unless ``limits`` say otherwise."""
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        results_dir=results_dir,
        checkpoint_dir=checkpoint_dir,
        **{**OPEN_ACCESS, **limits},
    )


@contextmanager
def serve_api(settings: Settings, name: str) -> Iterator[str]:
    """The API app of ``settings`` served by uvicorn in a thread of this process (real HTTP, a free port);
    yields its base URL and stops it on the way out."""
    port = free_port()
    # The proxy settings as ``stack.services.api_command`` passes them (uvicorn alone would trust 127.0.0.1).
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{name}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def start_stack(
    redis_url: str,
    checkpoint_dir: Path,
    root: Path,
    *,
    queues: tuple[str, ...] = QUEUES,
    worker_env: dict[str, str] | None = None,
    webhooks: bool = True,
    **limits: object,
) -> Iterator[Stack]:
    """Start the workers of ``queues`` and an API on the Redis database ``redis_url`` (one that no other stack
    uses: the ``redis_db`` fixtures hand them out); yields the stack, then stops them."""
    name = "db" + redis_url.rsplit("/", 1)[-1]
    results_dir = root / "results"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHECKPOINT_DIR": str(checkpoint_dir),
        "RESULTS_DIR": str(results_dir),
        "DEVICE": "cpu",
        "HEARTBEAT_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
        **(worker_env or {}),
    }
    processes = LocalStack(env, log_dir=root, name_prefix=f"{name}-")
    try:
        # One torch thread each: on a shared CI CPU, competing OpenMP pools slow each other down badly.
        for spec in worker_specs(torch_threads=1):
            if spec.queue in queues:
                processes.start_worker(spec)
        if webhooks:
            processes.start_worker(webhook_worker_spec())
        with serve_api(api_settings(redis_url, results_dir, checkpoint_dir, **limits), name) as base_url:
            processes.wait_for_workers()
            logs = {queue: processes.log_path(f"worker-{queue}") for queue in processes.workers}
            with httpx.Client(base_url=base_url, timeout=180) as client:
                yield Stack(client, base_url, redis_url, results_dir, checkpoint_dir, processes, logs)  # type: ignore[arg-type]
    finally:
        processes.stop()


@contextmanager
def another_api(stack: Stack, name: str, **limits: object) -> Iterator[Stack]:
    """A second API app, with settings of its own (keys, CORS, rate limits...), in front of ``stack``'s workers:
    on its Redis database and its results folder, as a second API process would be. No worker is started."""
    settings = api_settings(stack.redis_url, stack.results_dir, stack.checkpoint_dir, **limits)
    with serve_api(settings, name) as base_url, httpx.Client(base_url=base_url, timeout=180) as client:
        yield replace(stack, client=client, base_url=base_url)
