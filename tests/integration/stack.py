"""Starting the service for the end-to-end tests: a real Celery worker process and uvicorn over HTTP.

Each ``Stack`` is one API (uvicorn in a thread of the test process, real HTTP)
and one worker (a separate ``celery worker`` process, prefork pool) on one Redis
database; stacks on different databases keep their queues and results apart.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import uvicorn

from api.config import Settings
from api.launcher import RedisServer, free_port, spawn, stop, worker_command
from api.main import create_app
from workers.protocol import WORKERS_INDEX_KEY

REPO = Path(__file__).resolve().parents[2]
SERVED = ("dcgan-A", "dcgan-B", "ddpm-digits", "dann-svhn", "dann-usps")
WORKER_START_TIMEOUT_S = 180
PLUMBING_T = 40  # diffusion timesteps of the untrained test model

# Small limits, so the bad-input tests send small bodies.
PLUMBING_LIMITS: dict[str, object] = {
    "max_files": 8,
    "max_file_bytes": 200_000,
    "max_body_bytes": 1_000_000,
    "max_image_pixels": 1_000_000,
    "max_digit_images": 100,
    "default_wait_s": 60.0,
    "max_wait_s": 90.0,
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
    save_model(
        ConditionalUNet(UNetConfig(base_channels=8)),
        directory,
        "ddpm-digits",
        {"schedule": schedule, "sampling": {"guidance_scale": 1.0}},
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
    worker: subprocess.Popen
    worker_log: Path

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # leave the test process's handlers alone
        pass


def _wait_for_worker(redis_url: str, worker: subprocess.Popen, log: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}:\n{log.read_text()[-3000:]}")
        if client.zcard(WORKERS_INDEX_KEY):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no worker registered within {WORKER_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def start_stack(
    redis_server: RedisServer, db: int, checkpoint_dir: Path, root: Path, **limits: object
) -> Iterator[Stack]:
    """Start a worker and an API on database ``db``; yields the stack, then stops both."""
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    results_dir = root / "results"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHECKPOINT_DIR": str(checkpoint_dir),
        "RESULTS_DIR": str(results_dir),
        "DEVICE": "cpu",
        # One thread: on a shared CI CPU, competing OpenMP pools slow each other down badly.
        "TORCH_THREADS": "1",
        "HEARTBEAT_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log = root / "worker.log"
    with log.open("wb") as sink:
        worker = spawn(worker_command(name=f"db{db}@%h"), env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    server = thread = None
    try:
        settings = Settings(
            _env_file=None, redis_url=redis_url, results_dir=results_dir, checkpoint_dir=checkpoint_dir, **limits
        )
        port = free_port()
        server = _Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name=f"uvicorn-db{db}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        _wait_for_worker(redis_url, worker, log)
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url, timeout=180) as client:
            yield Stack(client, base_url, redis_url, results_dir, checkpoint_dir, worker, log)
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(10)
        stop(worker, timeout=20)
