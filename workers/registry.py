"""The served models of one worker process, loaded once, and its registration in Redis.

``worker_process_init`` loads every served checkpoint in each pool child (after
the fork, so CUDA is only ever initialised in the child), then a heartbeat thread
keeps a short-lived Redis key that says what this process has loaded. The API's
``GET /models`` and ``/readyz`` read those keys.

A worker serves the models of the queues it consumes (``workers.protocol.ROLE_QUEUES``):
the small-model worker does not hold the diffusion UNet, and the diffusion
worker does not hold the DCGANs and DANNs. The queues are read from the worker
itself at ``worker_init`` (after ``-Q`` is applied), so the models always match
what it consumes; outside a worker they come from ``WORKER_QUEUES``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import torch
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from models.checkpoints import CheckpointError
from models.loading import (
    DANN_MODELS,
    DIGIT_MODEL,
    FACE_MODELS,
    Pipeline,
    load_pipeline,
)
from models.pipelines import DannClassifier, DigitPipeline, FacePipeline
from models.scheduler import SamplingConfig

from .batching import MicroBatcher
from .config import WorkerSettings, get_settings
from .protocol import (
    CLASSIFY_ROLES,
    DIGIT_ROLE,
    FACE_ROLES,
    ROLE_QUEUES,
    WORKERS_INDEX_KEY,
    worker_key,
)
from .storage import prune_expired

log = logging.getLogger(__name__)

# role -> checkpoint name, for every model a worker serves.
SERVED: dict[str, str] = {
    **{FACE_ROLES[variant]: name for variant, name in FACE_MODELS.items()},
    DIGIT_ROLE: DIGIT_MODEL,
    **{CLASSIFY_ROLES[target]: name for target, name in DANN_MODELS.items()},
}


def served_for(queues: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The part of ``SERVED`` whose jobs come on ``queues``."""
    return {role: name for role, name in SERVED.items() if ROLE_QUEUES[role] in queues}


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
    warm: bool = False  # one forward pass done: set-up costs paid, the checkpoint proven to run

    def describe(self) -> dict[str, Any]:
        weights = self.card.get("weights", {})
        info: dict[str, Any] = {
            "role": self.role,
            "name": self.name,
            "warm": self.warm,
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
            default = SamplingConfig.card_default(self.card)
            info["guidance_scale"] = default.guidance_scale
            info["sampling"] = default.to_dict()
        return info


def _first_param(pipeline: Pipeline) -> torch.Tensor:
    for attr in ("net", "unet", "model"):
        net = getattr(pipeline, attr, None)
        if isinstance(net, torch.nn.Module):
            return next(net.parameters())
    raise TypeError(f"{type(pipeline).__name__} holds no network")


def public_reason(err: Exception, checkpoint_dir: Path) -> str:
    """Why a checkpoint did not load, naming its files relative to ``checkpoint_dir``.

    It is published (GET /models, /readyz), and this machine's paths are not the
    clients' business; the worker's log keeps the full message.
    """
    text = f"{type(err).__name__}: {err}"
    for folder in sorted({str(checkpoint_dir.resolve()), str(checkpoint_dir)}, key=len, reverse=True):
        folder = folder.rstrip(os.sep)
        text = text.replace(folder + os.sep, "")
        if os.path.isabs(folder):
            text = text.replace(folder, "CHECKPOINT_DIR")
    return text


def warm_up_digits(pipeline: DigitPipeline, card: dict) -> None:
    """One guided network evaluation, so the first request does not pay for oneDNN's (or cuDNN's) set-up."""
    pipeline([0], sampler="ddim", steps=1, guidance_scale=SamplingConfig.card_default(card).guidance_scale)


def warm_up(pipeline: Pipeline, card: dict) -> None:
    """One forward pass of a served model: the first request then pays no kernel selection or
    allocator growth, and a checkpoint that loads but cannot run shows before any job does."""
    if isinstance(pipeline, DigitPipeline):
        # The UNet stays plain NCHW fp32 under inference_mode: make bench's cpu_fast_path found neither
        # channels-last nor bf16 autocast faster on a CPU without bf16 instructions.
        warm_up_digits(pipeline, card)
    elif isinstance(pipeline, FacePipeline):
        pipeline(1)
    elif isinstance(pipeline, DannClassifier):
        pipeline(torch.zeros(1, 3, 28, 28))
    else:
        raise TypeError(f"no warm-up for {type(pipeline).__name__}")


@dataclass
class Registry:
    settings: WorkerSettings
    queues: tuple[str, ...] = ()  # consumed queues; empty = the settings' WORKER_QUEUES
    device: torch.device | None = None
    models: dict[str, LoadedModel] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # role -> why it is not loaded
    loaded_at: float = 0.0

    def __post_init__(self) -> None:
        self.queues = tuple(self.queues) or self.settings.queues
        self.served = served_for(self.queues)

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
            self.missing = {role: str(err) for role in self.served}
            log.error("%s", err)
            return
        for role, name in self.served.items():
            try:
                pipeline, card = load_pipeline(self.settings.checkpoint_dir, name, device=self.device)
            except (CheckpointError, OSError, ValueError, KeyError, TypeError) as err:
                # One missing checkpoint must not take the others down: the worker
                # serves what it has and reports the rest (GET /models, /readyz).
                self.missing[role] = public_reason(err, self.settings.checkpoint_dir)
                log.warning("not serving %s (%s): %s", role, name, err)
                continue
            self.models[role] = LoadedModel(role, name, pipeline, card, str(self.device))
        self.loaded_at = time.time()
        log.info(
            "loaded %d models for queues %s on %s in %.1f s from %s",
            len(self.models),
            ",".join(self.queues),
            self.device,
            time.perf_counter() - started,
            self.settings.checkpoint_dir,
        )

    def warm_up(self, on_warm: Callable[[], None] = lambda: None) -> None:
        """One forward pass per loaded model (``warm_up``), calling ``on_warm`` after each, so
        readiness can follow; a model whose pass fails is moved to ``missing``."""
        started = time.perf_counter()
        for role, model in list(self.models.items()):
            try:
                warm_up(model.pipeline, model.card)
            except (RuntimeError, ValueError, TypeError) as err:  # a shape mismatch, CUDA out of memory
                self.missing[role] = "warm-up failed: " + public_reason(err, self.settings.checkpoint_dir)
                del self.models[role]
                log.warning("not serving %s (%s): its warm-up failed: %s", role, model.name, err)
            else:
                model.warm = True
            on_warm()
        log.info("warmed up %d models in %.1f s", len(self.models), time.perf_counter() - started)

    def get(self, role: str) -> LoadedModel:
        if role in self.models:
            return self.models[role]
        if role not in self.served:
            raise ModelUnavailable(
                f"model {SERVED.get(role, role)!r} is not served by this worker: it consumes the queues "
                f"{', '.join(self.queues)}, and {role!r} jobs belong on {ROLE_QUEUES.get(role, '?')!r}"
            )
        reason = self.missing.get(role, "not loaded")
        raise ModelUnavailable(
            f"model {SERVED.get(role, role)!r} is not loaded on this worker ({reason}); "
            "train it or point CHECKPOINT_DIR at a folder that has it"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "device": str(self.device) if self.device else None,
            "queues": list(self.queues),
            "loaded_at": self.loaded_at,
            # Copies: the heartbeat thread reads while ``warm_up`` may move a model to ``missing``.
            "models": [model.describe() for model in list(self.models.values())],
            "missing": [
                {"role": role, "name": SERVED[role], "reason": reason} for role, reason in list(self.missing.items())
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
        self._wake = threading.Event()  # beat now rather than at the next interval
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
            self._wake.wait(self.settings.heartbeat_seconds)
            self._wake.clear()

    def beat_soon(self) -> None:
        """Publish the registry's state now (a model just warmed up), not at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
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
_batcher: MicroBatcher | None = None
_consumed_queues: tuple[str, ...] = ()  # set at worker_init, inherited by forked pool children
_lock = threading.Lock()


def get_registry() -> Registry:
    """This process's registry, loading it on first use (the solo pool has no process init)."""
    global _registry, _heartbeat
    with _lock:
        if _registry is None:
            settings = get_settings()
            registry = Registry(settings, queues=_consumed_queues)
            registry.load()
            _registry = registry
            # Registered while warming up, so /readyz can say which models are not warm yet;
            # each model is published as soon as it is. Jobs wait: this runs before the pool takes any.
            heartbeat = _heartbeat = Heartbeat(registry, settings)
            heartbeat.start()
            registry.warm_up(on_warm=heartbeat.beat_soon)
        return _registry


def get_batcher() -> MicroBatcher:
    """This process's micro-batcher (one inference thread); batches of one when MICRO_BATCH is off."""
    global _batcher
    with _lock:
        if _batcher is None:
            settings = get_settings()
            wait_s = settings.batch_wait_ms / 1000 if settings.micro_batch else 0.0
            _batcher = MicroBatcher(wait_s, wait_alone=settings.batch_wait_always, name="micro-batcher")
        return _batcher


def batch_limit(kind: str) -> int:
    """Rows per batched forward pass for ``kind`` ("faces" or "classify"); 1 when batching is off."""
    settings = get_settings()
    if not settings.micro_batch:
        return 1
    return settings.batch_max_faces if kind == "faces" else settings.batch_max_classify


def consumed_queues(worker: Any) -> tuple[str, ...]:
    """The queues a Celery worker consumes, once ``-Q`` has been applied."""
    try:
        return tuple(sorted(worker.app.amqp.queues.consume_from))
    except AttributeError:  # not a worker (a test, or another sender)
        return ()


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    get_registry()


@worker_init.connect
def _load_without_fork(sender: Any = None, **_: Any) -> None:
    global _consumed_queues
    _consumed_queues = consumed_queues(sender)
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
    if _batcher is not None:
        _batcher.close()
