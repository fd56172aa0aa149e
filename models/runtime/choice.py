"""Which engine and precision run the UNet on this machine: by setting, by the model card, by measurement.

bf16 is allowed only where (a) the CPU has native bf16 instructions and (b) the
model card records a measurement of that engine at bf16, on these weights, whose
digits score within ``ACCURACY_TOLERANCE`` accuracy and ``MSSSIM_TOLERANCE`` MS-SSIM
of fp32 (``training.evaluate digits-engines`` writes it). Among what is allowed,
``auto`` times a few forward passes of each engine and keeps the fastest.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..unet import NULL_LABEL, ConditionalUNet
from . import hardware
from .engines import ENGINE_PRECISIONS, NoiseModel, TorchEngine, build_engine
from .export import export_onnx, weights_digest

log = logging.getLogger(__name__)

ENGINE_SETTINGS = ("auto", *ENGINE_PRECISIONS)
PRECISION_SETTINGS = ("auto", "fp32", "bf16")
ACCURACY_TOLERANCE = 0.005  # half a point of the evaluation classifier's accuracy
MSSSIM_TOLERANCE = 0.01
# Ten digits with guidance: the 2N rows of the service's usual request, and where the runtimes' gaps show.
CALIBRATION_BATCH = 20
CALIBRATION_ROUNDS = 2
CONTENDER_MARGIN = 1.5
# Largest max|engine - torch| / max|torch| on a small batch before an engine is trusted: an export or compile bug
# gives errors of the output's own size; bf16 rounding gives ~0.01 on the shipped UNet, ~0.1 on tiny random ones.
VERIFY_TOLERANCE = {"fp32": 1e-3, "bf16": 0.25}
MEASURE_HINT = "python -m training.evaluate digits-engines"

Candidate = tuple[str, str]  # (engine, precision)


def record_key(engine: str, precision: str) -> str:
    """Where a measurement of (engine, precision) sits in the card's ``runtime.measured``."""
    return f"{engine}/{precision}"


def measured_record(card: dict, engine: str, precision: str) -> dict | None:
    return card.get("runtime", {}).get("measured", {}).get(record_key(engine, precision))


def bf16_refusal(card: dict, engine: str, digest: str) -> str | None:
    """Why ``engine`` may not run these weights (``digest``) in bf16 here, or None when it may."""
    if "bf16" not in ENGINE_PRECISIONS[engine]:
        return f"{engine} has no bf16 path"
    if not hardware.cpu_has_bf16():
        return "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"
    record = measured_record(card, engine, "bf16")
    if record is None or record.get("accepted") is not True:
        return f"the model card has no accepted runtime.measured[{record_key(engine, 'bf16')!r}] ({MEASURE_HINT})"
    if record.get("weights_sha256") != digest:
        return f"the card's {record_key(engine, 'bf16')} measurement is of other weights ({MEASURE_HINT})"
    return None


def plan(setting_engine: str, setting_precision: str, card: dict, digest: str) -> tuple[list[Candidate], list[str]]:
    """The (engine, precision) pairs the settings and the card allow, and why any wanted bf16 is not among them."""
    if setting_engine not in ENGINE_SETTINGS or setting_precision not in PRECISION_SETTINGS:
        raise ValueError(f"engine {setting_engine!r} / precision {setting_precision!r}: use {ENGINE_SETTINGS} / "
                         f"{PRECISION_SETTINGS}")
    engines = list(ENGINE_PRECISIONS) if setting_engine == "auto" else [setting_engine]
    fp32 = [(engine, "fp32") for engine in engines]
    if setting_precision == "fp32":
        return fp32, []
    refusals = {engine: bf16_refusal(card, engine, digest) for engine in engines}
    bf16 = [(engine, "bf16") for engine in engines if refusals[engine] is None]
    if setting_precision == "auto":
        untried = {e: why for e, why in refusals.items() if why is not None and "bf16" in ENGINE_PRECISIONS[e]}
        return fp32 + bf16, [f"bf16 not tried ({_reasons(untried)})"] if untried else []
    if bf16:
        return bf16, []
    return fp32, [f"DIGIT_PRECISION=bf16 refused ({_reasons(refusals)}): running fp32"]


def _reasons(why: dict[str, str | None]) -> str:
    return "; ".join(f"{engine}: {reason}" for engine, reason in why.items())


def calibration_inputs(unet: ConditionalUNet, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed batch like the pipeline's: noise, timesteps, half real labels and half null ones."""
    gen = torch.Generator().manual_seed(0)
    size, channels = unet.config.sample_size, unet.config.in_channels
    labels = torch.randint(0, unet.config.num_classes, (batch,), generator=gen)
    labels[batch // 2 :] = NULL_LABEL
    x = torch.randn(batch, channels, size, size, generator=gen)
    return x, torch.randint(0, 400, (batch,), generator=gen), labels


@torch.inference_mode()
def calibrate(
    engines: Sequence[NoiseModel], inputs: Sequence[torch.Tensor], rounds: int = CALIBRATION_ROUNDS
) -> list[float]:
    """Seconds per forward pass of each engine on ``inputs``: the best of up to ``rounds`` passes. An engine over
    ``CONTENDER_MARGIN`` times slower than the best so far is not timed again: it cannot win, and its passes would be
    the longest of the calibration. No warm-up pass: ``build_candidates``' check has paid each engine's set-up, and
    what a new batch size adds was measured to be within the noise of a shared CPU."""
    best = [math.inf] * len(engines)
    for _ in range(rounds):
        leader = min(best)
        # Interleaved, so a burst of other work on a shared CPU slows every engine alike.
        for i, engine in enumerate(engines):
            if best[i] > CONTENDER_MARGIN * leader:
                continue
            started = time.perf_counter()
            engine(*inputs)
            best[i] = min(best[i], time.perf_counter() - started)
    return best


@torch.inference_mode()
def _verified(engine: NoiseModel, reference: torch.Tensor, inputs: Sequence[torch.Tensor]) -> NoiseModel:
    error = ((engine(*inputs) - reference).abs().max() / reference.abs().max().clamp(min=1e-6)).item()
    if not error <= VERIFY_TOLERANCE[engine.precision]:  # NaN fails too
        raise RuntimeError(f"its output differs from torch's by {error:.3g} of the output's largest value")
    return engine


def build_candidates(
    unet: ConditionalUNet, candidates: Sequence[Candidate], export: Callable[[], Path]
) -> list[NoiseModel]:
    """Each candidate built and checked against torch on a small batch; one that fails is left out, with one
    log line saying why (not installed, export or compile error, wrong output)."""
    inputs = calibration_inputs(unet, 2)
    with torch.inference_mode():
        reference = unet(*inputs).float()
    engines: list[NoiseModel] = []
    for name, precision in candidates:
        try:
            engine = build_engine(name, precision, unet, export)
            engines.append(engine if name == "torch" else _verified(engine, reference, inputs))
        except Exception as err:  # whatever a runtime raises: the worker serves with what does work
            log.warning("digit engine %s %s left out: %s: %s", name, precision, type(err).__name__, err)
    return engines


def choose_engine(
    unet: ConditionalUNet,
    setting_engine: str,
    setting_precision: str,
    card: dict,
    *,
    cache_dir: Path,
    checkpoint_key: str,
    batch: int = CALIBRATION_BATCH,
) -> NoiseModel:
    """The engine that runs ``unet``: DIGIT_ENGINE (``torch`` | ``openvino`` | ``onnxruntime`` | ``auto``) and
    DIGIT_PRECISION (``fp32`` | ``bf16`` | ``auto``), as far as this CPU and the card allow, the fastest by a
    short calibration when several are; torch when nothing else builds. A GPU always keeps torch.
    ``checkpoint_key`` (the checkpoint's name) and the weights' hash name the ONNX export in ``cache_dir``."""
    device = next(unet.parameters()).device
    if device.type != "cpu":
        log.info("digit engine: torch on %s (DIGIT_ENGINE chooses among CPU runtimes)", device)
        return TorchEngine(unet)
    candidates, notes = plan(setting_engine, setting_precision, card, weights_digest(unet))
    for note in notes:  # a refused DIGIT_PRECISION=bf16 is worth a warning; auto not trying bf16 is routine
        log.log(logging.WARNING if setting_precision == "bf16" else logging.INFO, "%s", note)
    # One export shared by the ONNX engines, made only if one of them is tried.
    export = _once(functools.partial(export_onnx, unet, checkpoint_key, Path(cache_dir)))
    engines = build_candidates(unet, candidates, export)
    if not engines:
        log.warning("digit engine: torch fp32, since no %s engine could be built (see above)", setting_engine)
        return TorchEngine(unet)
    if len(engines) == 1:
        log.info("digit engine: %s %s (DIGIT_ENGINE=%s, DIGIT_PRECISION=%s)", engines[0].name, engines[0].precision,
                 setting_engine, setting_precision)
        return engines[0]
    seconds = calibrate(engines, calibration_inputs(unet, batch))
    best = min(range(len(engines)), key=seconds.__getitem__)
    timings = ", ".join(f"{e.name} {e.precision} {s * 1000:.0f} ms" for e, s in zip(engines, seconds, strict=True))
    log.info("digit engine: %s %s, the fastest at batch %d (%s)", engines[best].name, engines[best].precision, batch,
             timings)
    return engines[best]


def _once(make: Callable[[], Path]) -> Callable[[], Path]:
    """``make`` run at most once: later calls get its path, or its error, again (a failed export is not retried)."""
    outcome: list[Path | Exception] = []

    def call() -> Path:
        if not outcome:
            try:
                outcome.append(make())
            except Exception as err:
                outcome.append(err)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return call
