"""Digits: do the CPU engines' faster precisions draw the same digits as fp32?

    python -m training.evaluate digits-engines [--per-digit 100] [--threads N] [--data data/hw2_data]

For each engine's reduced precision that this CPU runs natively (today OpenVINO at
bf16; ``models.runtime.ENGINE_PRECISIONS``), it draws the report seed's digits with
the card's default sampling configuration, as ``training.evaluate digits`` does
(``evaluate_digits.measure``), and compares accuracy and MS-SSIM with fp32 torch's on
the same seed and noise. The record it writes under the card's ``runtime.measured``
is what lets a worker run that precision (``models.runtime.choice``): accepted when
within ``ACCURACY_TOLERANCE`` and ``MSSSIM_TOLERANCE`` of fp32, for these weights.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
from datetime import UTC, datetime

import torch

from contract.digits import DISTILLED
from contract.roles import DIGIT_CHECKPOINT
from models.checkpoints import load_model, read_card, write_card
from models.loading import EVAL_CLASSIFIER, load_pipeline
from models.pipelines import DigitPipeline
from models.runtime import (
    ACCURACY_TOLERANCE,
    ENGINE_PRECISIONS,
    MSSSIM_TOLERANCE,
    NoiseModel,
    TorchEngine,
    build_engine,
    cpu_description,
    export_onnx,
    hardware,
    record_key,
    weights_digest,
)
from models.scheduler import SamplingConfig

from . import evaluate_digits
from .eval_common import record_evaluation
from .evaluate_digits import REPORT_SEED


def candidates(has_bf16: bool) -> list[tuple[str, str]]:
    """The (engine, precision) pairs to compare with fp32: each engine's bf16, where the CPU has bf16 instructions
    (elsewhere OpenVINO would run f32 under a bf16 hint, and the record would vouch for what it did not measure)."""
    if not has_bf16:
        return []
    return [(engine, p) for engine, precisions in ENGINE_PRECISIONS.items() for p in precisions if p != "fp32"]


def engine_record(row: dict, fp32: dict, engine: NoiseModel, digest: str, command: str) -> dict:
    """What the card keeps of one engine's measurement, and whether it is accepted."""
    accuracy_gap = row["accuracy"] - fp32["accuracy"]
    msssim_gap = row["msssim"] - fp32["msssim"]
    # The small epsilon: both figures are rounded to 4 decimals, so a gap of exactly the tolerance must pass.
    accepted = abs(accuracy_gap) <= ACCURACY_TOLERANCE + 1e-9 and abs(msssim_gap) <= MSSSIM_TOLERANCE + 1e-9
    return {
        "engine": engine.name,
        "precision": engine.precision,
        "accepted": accepted,
        "accuracy": row["accuracy"],
        "msssim": row["msssim"],
        "fp32_accuracy": fp32["accuracy"],
        "fp32_msssim": fp32["msssim"],
        "fd": row.get("fd"),  # the classifier-feature Frechet distance to real digits, where measured
        "fp32_fd": fp32.get("fd"),
        "accuracy_tolerance": ACCURACY_TOLERANCE,
        "msssim_tolerance": MSSSIM_TOLERANCE,
        "s_per_image": row["s_per_image"],
        "fp32_s_per_image": fp32["s_per_image"],
        "sampling": row["label"],
        "nfe": row["nfe"],
        "seed": row["seed"],
        "images_per_digit": row["images_per_digit"],
        "weights_sha256": digest,
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "runtime_version": importlib.metadata.version(engine.name),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": command,
    }


def _measure_with(
    pipe: DigitPipeline, engine: NoiseModel, clf: torch.nn.Module, config: SamplingConfig, args: argparse.Namespace
) -> dict:
    """``evaluate_digits.measure`` of the pipeline run by ``engine`` (the student's, for the distilled sampler):
    the same figures as ``digits`` reports."""
    pipe.use_engine(engine, student=config.sampler == DISTILLED)
    # measure() scores the digits' features against as many real val digits (--data), read once per process.
    real = evaluate_digits.real_reference(clf, args.data, args.per_digit)
    return evaluate_digits.measure(
        pipe, clf, config, per_digit=args.per_digit, seed=REPORT_SEED, batch=args.batch, real=real
    )


def _print_row(what: str, row: dict) -> None:
    print(f"{what:18s} {row['label']}: {row['images_per_digit']}/digit, seed {row['seed']}, accuracy "
          f"{row['accuracy']:.4f}, MS-SSIM {row['msssim']:.4f}, {row['s_per_image']:.4f} s/image")


def measure_engines(args: argparse.Namespace) -> dict[str, dict]:
    """fp32 torch and each candidate precision on the report seed (always on the CPU: these are CPU runtimes), for
    the diffusion model at its guided default and for its distilled student when there is one; each network's
    records are written to its own card's ``runtime.measured`` and returned by checkpoint name."""
    pipe, card = load_pipeline(args.checkpoint_dir, DIGIT_CHECKPOINT, device="cpu")
    assert isinstance(pipe, DigitPipeline)
    clf, _ = load_model(args.checkpoint_dir, EVAL_CLASSIFIER, device="cpu")
    pairs = candidates(hardware.cpu_has_bf16())
    if not pairs:
        print("this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): no reduced precision to measure here")
        return {}
    networks = [(DIGIT_CHECKPOINT, pipe.unet, SamplingConfig.card_default(card))]
    student = evaluate_digits.attach_student(pipe, args)
    if student is not None:
        networks.append((student, pipe.student, SamplingConfig(DISTILLED)))
    records = {}
    for name, net, config in networks:
        if not args.remeasure and _recorded(read_card(args.checkpoint_dir, name), net, config,
                                                               pairs, args.per_digit):
            print(f"{name}: its card records every engine for these weights at this seed and count (--remeasure)")
            continue
        records[name] = _measure_network(args, pipe, clf, name, net, config, pairs)
    return records


def _recorded(card: dict, net: torch.nn.Module, config: SamplingConfig, pairs: list[tuple[str, str]],
              per_digit: int) -> bool:
    """Whether ``card`` already holds a measurement of each pair for these weights, sampling, seed and count."""
    wanted = {"weights_sha256": weights_digest(net), "sampling": evaluate_digits.config_label(config),
              "seed": REPORT_SEED, "images_per_digit": per_digit}
    measured = card.get("runtime", {}).get("measured", {})
    return all(
        all(measured.get(record_key(*pair), {}).get(k) == v for k, v in wanted.items()) for pair in pairs
    )


def _measure_network(
    args: argparse.Namespace, pipe: DigitPipeline, clf: torch.nn.Module, name: str, net: torch.nn.Module,
    config: SamplingConfig, pairs: list[tuple[str, str]],
) -> dict[str, dict]:
    fp32 = _measure_with(pipe, TorchEngine(net), clf, config, args)
    _print_row(f"{name} torch fp32", fp32)
    digest = weights_digest(net)
    export = functools.partial(export_onnx, net, name, args.engine_cache_dir)
    records: dict[str, dict] = {}
    for engine_name, precision in pairs:
        try:
            engine = build_engine(engine_name, precision, net, export)
        except Exception as err:  # not installed, or it does not compile here: nothing to measure
            print(f"{engine_name} {precision}: not measured ({type(err).__name__}: {err})")
            continue
        row = _measure_with(pipe, engine, clf, config, args)
        _print_row(f"{name} {engine_name} {precision}", row)
        record = records[record_key(engine_name, precision)] = engine_record(row, fp32, engine, digest, args.command)
        print(f"{'':18s} accuracy {record['accuracy'] - record['fp32_accuracy']:+.4f}, MS-SSIM "
              f"{record['msssim'] - record['fp32_msssim']:+.4f} vs fp32: "
              f"{'accepted' if record['accepted'] else 'not accepted'}")
    card = read_card(args.checkpoint_dir, name)  # read again: the card may have changed meanwhile
    card.setdefault("runtime", {}).setdefault("measured", {}).update(records)
    write_card(args.checkpoint_dir, name, card)
    record_evaluation(args.checkpoint_dir, name, "digits-engines", args.command)
    return records
