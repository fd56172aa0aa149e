"""The served models of one worker process, loaded once, and its registration in Redis.

``worker_process_init`` loads every served checkpoint in each pool child (after
the fork, so CUDA is only ever initialised in the child), then a heartbeat thread
keeps a short-lived Redis key that says what this process has loaded. The API's
``GET /models`` and ``/readyz`` read those keys.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import torch
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from models.checkpoints import CheckpointError
from models.loading import DANN_MODELS, DIGIT_MODEL, FACE_MODELS, Pipeline, load_pipeline

from .config import WorkerSettings, get_settings
from .protocol import CLASSIFY_ROLES, DIGIT_ROLE, FACE_ROLES, WORKERS_INDEX_KEY, worker_key
from .storage import prune_expired

log = logging.getLogger(__name__)

# role -> checkpoint name, for every model a worker serves.
SERVED: dict[str, str] = {
    **{FACE_ROLES[variant]: name for variant, name in FACE_MODELS.items()},
    DIGIT_ROLE: DIGIT_MODEL,
    **{CLASSIFY_ROLES[target]: name for target, name in DANN_MODELS.items()},
}


class ModelUnavailable(RuntimeError):
    """A job needs a model this worker could not load."""


def pick_device(setting: str) -> torch.device:
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("DEVICE=cuda but torch sees no CUDA device: set DEVICE=cpu or auto")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class LoadedModel:
    role: str
    name: str
    pipeline: Pipeline
    card: dict
    device: str

    def describe(self) -> dict[str, Any]:
        weights = self.card.get("weights", {})
        info: dict[str, Any] = {
            "role": self.role,
            "name": self.name,
            "kind": self.card.get("kind"),
            "parameters": weights.get("parameters"),
            "dtype": str(_first_param(self.pipeline).dtype).removeprefix("torch."),
            "stored_dtype": weights.get("dtype"),
            "device": self.device,
            "metrics": self.card.get("metrics", {}),
            "hardware": self.card.get("training", {}).get("hardware"),
        }
        if self.card.get("kind") == "conditional-unet":
            info["num_train_timesteps"] = self.card.get("schedule", {}).get("num_train_timesteps", 400)
            info["guidance_scale"] = default_guidance(self.card)
        return info


def _first_param(pipeline: Pipeline) -> torch.Tensor:
    for attr in ("net", "unet", "model"):
        net = getattr(pipeline, attr, None)
        if isinstance(net, torch.nn.Module):
            return next(net.parameters())
    raise TypeError(f"{type(pipeline).__name__} holds no network")


def default_guidance(card: dict) -> float:
    """The card's recommended classifier-free guidance scale; 1 (off) when it has none."""
    return float(card.get("sampling", {}).get("guidance_scale", 1.0))


@dataclass
class Registry:
    settings: WorkerSettings
    device: torch.device | None = None
    models: dict[str, LoadedModel] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # role -> why it is not loaded
    loaded_at: float = 0.0

    def load(self) -> None:
        started = time.perf_counter()
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        # Softmax over 1024 attention tokens yields subnormal floats, which x86 CPUs
        # handle in microcode: flushing them to zero makes small UNets ~15x faster.
        torch.set_flush_denormal(True)
        try:
            self.device = pick_device(self.settings.device)
        except RuntimeError as err:
            self.missing = {role: str(err) for role in SERVED}
            log.error("%s", err)
            return
        for role, name in SERVED.items():
            try:
                pipeline, card = load_pipeline(self.settings.checkpoint_dir, name, device=self.device)
            except (CheckpointError, OSError, ValueError, KeyError, TypeError) as err:
                # One missing checkpoint must not take the others down: the worker
                # serves what it has and reports the rest (GET /models, /readyz).
                self.missing[role] = f"{type(err).__name__}: {err}"
                log.warning("not serving %s (%s): %s", role, name, err)
                continue
            self.models[role] = LoadedModel(role, name, pipeline, card, str(self.device))
        self.loaded_at = time.time()
        log.info(
            "loaded %d models on %s in %.1f s from %s",
            len(self.models),
            self.device,
            time.perf_counter() - started,
            self.settings.checkpoint_dir,
        )

    def get(self, role: str) -> LoadedModel:
        if role in self.models:
            return self.models[role]
        reason = self.missing.get(role, "not loaded")
        raise ModelUnavailable(
            f"model {SERVED.get(role, role)!r} is not loaded on this worker ({reason}); "
            "train it or point CHECKPOINT_DIR at a folder that has it"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device) if self.device else None,
            "checkpoint_dir": str(self.settings.checkpoint_dir),
            "loaded_at": self.loaded_at,
            "models": [model.describe() for model in self.models.values()],
            "missing": [
                {"role": role, "name": SERVED[role], "reason": reason} for role, reason in self.missing.items()
            ],
        }


class Heartbeat(threading.Thread):
    """Keeps this process's registration key alive while the process lives."""

    def __init__(self, registry: Registry, settings: WorkerSettings) -> None:
        super().__init__(name="registry-heartbeat", daemon=True)
        self.registry = registry
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.ttl = max(3 * settings.heartbeat_seconds, 5.0)
        self.started_at = time.time()
        self._halt = threading.Event()
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)

    def beat(self) -> None:
        now = time.time()
        payload = {
            "worker": self.worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "heartbeat_at": now,
            **self.registry.describe(),
        }
        pipe = self._client.pipeline()
        pipe.set(worker_key(self.worker_id), json.dumps(payload), px=int(self.ttl * 1000))
        pipe.zadd(WORKERS_INDEX_KEY, {self.worker_id: now + self.ttl})
        pipe.zremrangebyscore(WORKERS_INDEX_KEY, "-inf", now)
        pipe.execute()

    def run(self) -> None:
        beats = 0
        while not self._halt.is_set():
            try:
                self.beat()
                # Files outlive nothing in Redis: prune expired job folders now and then.
                if beats % 60 == 0:
                    prune_expired(self.settings.results_dir, self.settings.job_ttl_seconds)
            except (redis.RedisError, OSError) as err:
                log.warning("heartbeat failed: %s", err)
            beats += 1
            self._halt.wait(self.settings.heartbeat_seconds)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=5)  # a beat in flight would re-register after the delete
        try:
            pipe = self._client.pipeline()
            pipe.delete(worker_key(self.worker_id))
            pipe.zrem(WORKERS_INDEX_KEY, self.worker_id)
            pipe.execute()
        except redis.RedisError as err:
            log.debug("could not deregister %s: %s", self.worker_id, err)


_registry: Registry | None = None
_heartbeat: Heartbeat | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """This process's registry, loading it on first use (the solo pool has no process init)."""
    global _registry, _heartbeat
    with _lock:
        if _registry is None:
            settings = get_settings()
            registry = Registry(settings)
            registry.load()
            _registry = registry
            _heartbeat = Heartbeat(registry, settings)
            _heartbeat.start()
        return _registry


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    get_registry()


@worker_init.connect
def _load_without_fork(sender: Any = None, **_: Any) -> None:
    # Pools that do not fork (solo, threads) never send worker_process_init.
    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if name and not any(kind in name for kind in ("prefork", "processes")):
        get_registry()


@worker_process_shutdown.connect
@worker_shutdown.connect  # the solo pool's only process
def _deregister(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
