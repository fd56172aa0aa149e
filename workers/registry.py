"""The served models of one worker process: loaded once from the checkpoint folder, warmed up, looked up by role.

A worker serves the models of the queues it consumes (``contract.roles.ROLE_QUEUES``):
the small-model worker does not hold the diffusion UNet, and the diffusion
worker does not hold the DCGANs and DANNs. A checkpoint that does not load or
run is reported (``missing``), not fatal: the worker serves what it has.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract.digits import DISTILLED
from contract.roles import ROLE_QUEUES, SERVED, served_for
from models.checkpoints import CheckpointError, read_card
from models.loading import Pipeline, load_pipeline, student_name
from models.pipelines import DigitPipeline
from models.runtime import choose_engine, precision_of
from models.scheduler import SamplingConfig

from .config import WorkerSettings
from .device import pick_device
from .warmup import warm_up

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """A job needs a model this worker could not load."""


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
        engine, precision = self.runtime()
        info: dict[str, Any] = {
            "role": self.role,
            "name": self.name,
            "warm": self.warm,
            "kind": self.card.get("kind"),
            "parameters": weights.get("parameters"),
            "dtype": str(_first_param(self.pipeline).dtype).removeprefix("torch."),
            "engine": engine,
            "precision": precision,
            "stored_dtype": weights.get("dtype"),
            "device": self.device,
            "metrics": self.card.get("metrics", {}),
            "hardware": self.card.get("training", {}).get("hardware"),
        }
        if self.card.get("kind") == "conditional-unet":
            info["num_train_timesteps"] = self.card.get("schedule", {}).get("num_train_timesteps")
            pipeline = self.pipeline
            assert isinstance(pipeline, DigitPipeline)
            default = SamplingConfig.served_default(self.card, has_student=pipeline.student is not None)
            guided = SamplingConfig.card_default(self.card)
            info["guidance_scale"] = guided.guidance_scale
            info["sampling"] = default.to_dict()
            if pipeline.student is not None:
                info["student"] = {"name": student_name(self.card), "engine": self.runtime(DISTILLED)[0],
                                   "precision": self.runtime(DISTILLED)[1], "guided_sampling": guided.to_dict()}
        return info

    def runtime(self, sampler: str | None = None) -> tuple[str, str]:
        """(engine, precision) that runs the network: the digit pipeline's engine (``models.runtime``; the
        student's for ``sampler="distilled"``), else torch at the weights' dtype."""
        pipeline = self.pipeline
        if isinstance(pipeline, DigitPipeline):
            engine = pipeline.student_model if sampler == DISTILLED else pipeline.noise_model
        else:
            engine = None
        if hasattr(engine, "name") and hasattr(engine, "precision"):
            return engine.name, engine.precision  # type: ignore[union-attr]
        return "torch", precision_of(_first_param(self.pipeline).dtype)



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
            if isinstance(pipeline, DigitPipeline) and self.device.type == "cpu":
                self._choose_digit_engine(pipeline, card, name)
                if pipeline.student is not None:
                    self._choose_digit_engine(pipeline, self._student_card(card), student_name(card), student=True)
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

    def _student_card(self, card: dict) -> dict:
        return read_card(self.settings.checkpoint_dir, student_name(card) or "")

    def _choose_digit_engine(
        self, pipeline: DigitPipeline, card: dict, name: str | None, student: bool = False
    ) -> None:
        """The CPU runtime and precision of the UNet, or of its student (DIGIT_ENGINE, DIGIT_PRECISION): the fastest
        of those this machine and the card allow, timed now; torch when the others fail
        (``models.runtime.choose_engine``)."""
        settings = self.settings
        try:
            engine = choose_engine(
                pipeline.student if student else pipeline.unet,  # type: ignore[arg-type]
                settings.digit_engine,
                settings.digit_precision,
                card,
                cache_dir=settings.engine_cache_dir,
                checkpoint_key=name or "student",
            )
        except Exception as err:  # the UNet fails in torch too: the warm-up reports it as missing
            log.warning("digit engine: torch, since choosing one failed: %s: %s", type(err).__name__, err)
            return
        pipeline.use_engine(engine, student=student)

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
