"""Digits: accuracy, diversity and cost of the diffusion model's samplers, and the choice of the served one.

    python -m training.evaluate digits-sweep --seed 1 --select  # tuning seed: every row of GRID; picks the default
    python -m training.evaluate digits-sweep --seed 0 [--top 6] # report seed: that table (or its best rows)
    python -m training.evaluate digits                          # the default, the student (and DDPM-400): report seed

Accuracy is the project's MNIST-M classifier's on generated digits of each label;
diversity is the mean pairwise MS-SSIM within a label (``training.diversity``),
next to the same figure for real MNIST-M val digits; fidelity and coverage are the
Frechet distance (FD) and the precision / recall of Kynkaanniemi et al. (2019) in
the classifier's penultimate features against as many real val digits
(``training.feature_metrics``), next to the same figures for a second, disjoint set
of real digits (the "floor": what as good as real scores); cost is network
evaluations per image (NFE: a guided step costs two). The default is chosen on the tuning seed
only, by ``SELECTION_RULE``; the numbers reported for it come from the other seed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from contract.digits import DISTILLED, DISTILLED_STEPS
from contract.roles import DIGIT_CHECKPOINT, DIGIT_STUDENT_CHECKPOINT
from models.checkpoints import card_path, load_model, read_card, update_metrics, write_card
from models.loading import EVAL_CLASSIFIER, load_pipeline
from models.pipelines import DigitPipeline
from models.scheduler import SamplingConfig

from .data.datasets import load_digits
from .diversity import per_label_msssim
from .eval_common import classify_uint8, device_of, record_evaluation, write_metrics
from .feature_metrics import Reference, classifier_features, compare

TUNING_SEED = 1
REPORT_SEED = 0
MAX_NFE = 10
# Fixed before the first sweep ran: how far above real digits' MS-SSIM a default may be.
MSSSIM_TOLERANCE = 0.05
# Measured by earlier versions of this command, for configurations the sweep now covers.
STALE_METRICS = ("eval_classifier_acc_fewstep_noguidance",)
# The distilled student replaces the guided default only if it matches it on the report seed (issue's bars).
STUDENT_ACCURACY_DROP, STUDENT_MSSSIM_GAP, STUDENT_FD_RATIO = 0.005, 0.01, 1.10
STUDENT_RULE = (
    f"the distilled student is the served default only if, on the report seed, its accuracy is at least the guided "
    f"default's minus {STUDENT_ACCURACY_DROP}, its MS-SSIM within {STUDENT_MSSSIM_GAP} of the guided default's, and "
    f"its Frechet distance at most {STUDENT_FD_RATIO}x the guided default's"
)
SELECTION_RULE = (
    f"highest accuracy among configurations with at most {MAX_NFE} network evaluations per image whose "
    f"per-label MS-SSIM is at most real MNIST-M val's + {MSSSIM_TOLERANCE}; ties: lower MS-SSIM"
)

_MULTISTEP = ("dpmpp-2m", "unipc")
# Limited guidance intervals in paper timesteps, each sized so that its rows stay at <= 10 NFE.
# (55, 370) is about sigma in (0.28, 5.4], the interval Kynkaanniemi et al. (2024) found best for EDM2.
_INTERVAL_ROWS = ((5, (55, 370)), (6, (100, 370)), (8, (320, 400)))
GRID: tuple[SamplingConfig, ...] = (
    SamplingConfig("ddim", 25, 2.0),  # the default before this sweep
    *(SamplingConfig(s, 5, 3.0) for s in ("ddim", "dpmpp-2m", "dpmpp-2m-sde", "unipc")),
    *(SamplingConfig(s, 10, 3.0) for s in _MULTISTEP),
    *(SamplingConfig(s, 5, g) for s in _MULTISTEP for g in (2.0, 5.0)),
    SamplingConfig("unipc", 5, 8.0),
    *(SamplingConfig(s, 10, 1.0) for s in _MULTISTEP),
    *(SamplingConfig(s, steps, g, iv) for s in _MULTISTEP for g in (3.0, 6.0) for steps, iv in _INTERVAL_ROWS),
)


def config_label(config: SamplingConfig, num_train_timesteps: int = 400) -> str:
    """``unipc-5 g5 [55,370]``: how tables and logs name a configuration."""
    steps = config.steps or num_train_timesteps
    interval = f" [{config.guidance_interval[0]},{config.guidance_interval[1]}]" if config.guidance_interval else ""
    return f"{config.sampler}-{steps} g{config.guidance_scale:g}{interval if config.guidance_scale != 1 else ''}"


def generate_digits(
    pipe: DigitPipeline, per_digit: int, config: SamplingConfig, *, seed: int, batch: int, out_dir: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``per_digit`` images of each digit as uint8 (N, 3, 28, 28), their labels and the NFE per image."""
    device = next(pipe.unet.parameters()).device
    labels = torch.arange(10).repeat_interleave(per_digit)
    gen = torch.Generator(device).manual_seed(seed)
    chunks, nfe = [], 0
    for i in range(0, len(labels), batch):
        out = pipe(
            labels[i : i + batch],
            sampler=config.sampler,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            guidance_interval=config.guidance_interval,
            generator=gen,
        )
        chunks.append((out.images * 255).round().to(torch.uint8))
        nfe = out.nfe
    images = torch.cat(chunks)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, (img, label) in enumerate(zip(images, labels)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(out_dir / f"{int(label)}_{k % per_digit + 1:03d}.png")
    return images, labels, nfe


@dataclass(frozen=True)
class RealDigits:
    """Real MNIST-M val digits in the classifier's features: the reference generated digits are scored
    against, and the floor (``fd``, ``precision``, ``recall`` of a disjoint real set of the same size)."""

    per_digit: int
    reference: Reference
    floor: dict[str, float]


# One reference per (classifier, data, count) for the life of the process: a sweep scores every row against it.
_REAL_CACHE: dict[tuple[torch.nn.Module, str, int], RealDigits] = {}


def _label_block(labels: torch.Tensor, per_digit: int, start: int) -> torch.Tensor:
    """Indices of the real digits ``start`` .. ``start + per_digit`` of each label, in val order."""
    blocks = []
    for d in range(10):
        block = torch.nonzero(labels == d).flatten()[start : start + per_digit]
        if len(block) < per_digit:
            raise SystemExit(f"real MNIST-M val has fewer than {start + per_digit} digits labelled {d}: "
                             f"the reference and its floor need two disjoint sets of {per_digit} per label")
        blocks.append(block)
    return torch.cat(blocks)


def real_reference(clf: torch.nn.Module, data: Path, per_digit: int) -> RealDigits:
    """The first ``per_digit`` real val digits of each label (those ``real_msssim`` measures) as the reference,
    and the next ``per_digit`` of each scored against it as the floor; computed once per process.

    FD is biased by sample size (a smaller set's noisier covariance adds to it), so the
    reference holds exactly as many images as the generated set it is compared with
    (``measure`` checks), and the floor's second real set as many again.
    """
    key = (clf, str(data), per_digit)
    if key not in _REAL_CACHE:
        x, y = load_digits(data, "mnistm", "val")
        first, second = (_label_block(y, per_digit, start) for start in (0, per_digit))
        reference = Reference.of(classifier_features(clf, x[first]))  # type: ignore[arg-type]
        floor = compare(reference, classifier_features(clf, x[second]))  # type: ignore[arg-type]
        _REAL_CACHE[key] = RealDigits(per_digit, reference, {k: round(v, 4) for k, v in floor.items()})
    return _REAL_CACHE[key]


def measure(
    pipe: DigitPipeline, clf: torch.nn.Module, config: SamplingConfig, *, per_digit: int, seed: int, batch: int,
    real: RealDigits, out_dir: Path | None = None,
) -> dict:
    """One configuration's accuracy, per-class accuracy, MS-SSIM, FD / precision / recall against ``real``,
    NFE and seconds per image."""
    if real.per_digit != per_digit:
        raise ValueError(f"FD depends on the sample size: a reference of {real.per_digit} per digit "
                         f"cannot score {per_digit} per digit")
    device = next(pipe.unet.parameters()).device
    started = time.perf_counter()
    images, labels, nfe = generate_digits(pipe, per_digit, config, seed=seed, batch=batch, out_dir=out_dir)
    seconds = time.perf_counter() - started
    preds = classify_uint8(clf, images.to(device)).cpu()
    scores = compare(real.reference, classifier_features(clf, images))  # type: ignore[arg-type]
    return {
        **config.to_dict(),
        "label": config_label(config, pipe.schedule.num_train_timesteps),
        "nfe": nfe,
        "accuracy": round((preds == labels).float().mean().item(), 4),
        "per_class": [round((preds[labels == d] == d).float().mean().item(), 3) for d in range(10)],
        "msssim": round(per_label_msssim(images, labels), 4),
        **{k: round(v, 4) for k, v in scores.items()},
        "s_per_image": round(seconds / len(labels), 4),
        "images_per_digit": per_digit,
        "seed": seed,
    }


def real_msssim(data: Path, per_digit: int) -> float:
    """Per-label mean pairwise MS-SSIM of the first ``per_digit`` real MNIST-M val digits of each label."""
    x, y = load_digits(data, "mnistm", "val")
    keep = torch.cat([torch.nonzero(y == d).flatten()[:per_digit] for d in range(10)])
    return round(per_label_msssim(x[keep], y[keep]), 4)


def _cell(row: dict, key: str, spec: str) -> str:
    """A row's figure for a table, or "-" (as wide, so columns stay aligned) for a row cached before the
    figure was measured."""
    value = row.get(key)
    return format(value, spec) if value is not None else "-".rjust(len(format(0.0, spec)))


def _feature_cells(row: dict) -> str:
    return (f"FD {_cell(row, 'fd', '7.3f')}  precision {_cell(row, 'precision', '.3f')}  "
            f"recall {_cell(row, 'recall', '.3f')}")


def _floor_text(real: RealDigits) -> str:
    return (f"a second real set of {real.per_digit} per digit against the first: FD {real.floor['fd']:.3f}, "
            f"precision {real.floor['precision']:.3f}, recall {real.floor['recall']:.3f}")


def select_default(rows: list[dict], real: float) -> dict:
    """The row ``SELECTION_RULE`` picks."""
    eligible = [r for r in rows if r["nfe"] <= MAX_NFE and r["msssim"] <= real + MSSSIM_TOLERANCE]
    if not eligible:
        raise SystemExit(f"no configuration has <= {MAX_NFE} NFE and MS-SSIM <= {real + MSSSIM_TOLERANCE:.4f}")
    return max(eligible, key=lambda r: (r["accuracy"], -r["msssim"]))


def _load(args: argparse.Namespace) -> tuple[DigitPipeline, dict, torch.nn.Module]:
    device = device_of(args.device)
    pipe, card = load_pipeline(args.checkpoint_dir, DIGIT_CHECKPOINT, device=device)
    assert isinstance(pipe, DigitPipeline)
    clf, _ = load_model(args.checkpoint_dir, EVAL_CLASSIFIER, device=device)
    return pipe, card, clf


def sweep(args: argparse.Namespace) -> dict:
    """Every GRID row on ``args.seed``; with ``--select``, the default is chosen from them and written to the card.

    Rows already measured (same seed and count) are read back from ``--out``, so an
    interrupted sweep continues where it stopped.
    """
    if args.select and args.seed == REPORT_SEED:
        raise SystemExit(f"seed {REPORT_SEED} is the report seed: choose on another (the tuning seed is {TUNING_SEED})")
    pipe, _, clf = _load(args)
    cache = Path(args.out) / f"sweep_seed{args.seed}_pd{args.sweep_per_digit}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {r["label"]: r for r in map(json.loads, cache.read_text().splitlines())} if cache.is_file() else {}
    real = real_msssim(args.data, args.sweep_per_digit)
    reference = real_reference(clf, args.data, args.sweep_per_digit)
    print(f"real MNIST-M val, {args.sweep_per_digit} per digit: per-label MS-SSIM {real:.4f}; {_floor_text(reference)}")
    rows = []
    wanted = _confirmation_rows(args) if args.top else None
    for config in GRID:
        label = config_label(config, pipe.schedule.num_train_timesteps)
        if wanted is not None and label not in wanted:
            continue
        if label not in done:
            done[label] = measure(pipe, clf, config, per_digit=args.sweep_per_digit, seed=args.seed, batch=args.batch,
                                  real=reference)
            with cache.open("a") as f:
                f.write(json.dumps(done[label]) + "\n")
        row = done[label]
        rows.append(row)
        print(f"{label:28s} NFE {row['nfe']:3d}  accuracy {row['accuracy']:.3f}  MS-SSIM {row['msssim']:.3f}  "
              f"{_feature_cells(row)}  {row['s_per_image']:.3f} s/image")
    table = {"seed": args.seed, "images_per_digit": args.sweep_per_digit, "real_msssim": real,
             **{f"real_{k}": v for k, v in reference.floor.items()}, "rows": rows}
    card = read_card(args.checkpoint_dir, DIGIT_CHECKPOINT)
    sampling = card.setdefault("sampling", {})
    sampling.setdefault("sweep", {})[f"seed_{args.seed}"] = table
    if args.select:
        best = select_default(rows, real)
        for legacy in ("guidance_scale", "few_step_sampler", "few_step_steps"):  # superseded by "default"
            sampling.pop(legacy, None)
        sampling["default"] = SamplingConfig.from_dict(best).to_dict() | {"nfe": best["nfe"]}
        sampling["selection"] = {"rule": SELECTION_RULE, "tuning_seed": args.seed,
                                 "images_per_digit": args.sweep_per_digit, "chosen": best["label"],
                                 "accuracy": best["accuracy"], "msssim": best["msssim"], "real_msssim": real}
        print(f"default: {best['label']} (accuracy {best['accuracy']:.3f}, MS-SSIM {best['msssim']:.3f}, "
              f"NFE {best['nfe']})")
    write_card(args.checkpoint_dir, DIGIT_CHECKPOINT, card)
    return table


def _confirmation_rows(args: argparse.Namespace) -> set[str]:
    """``--top N`` on the report seed: the tuning seed's N most accurate rows within the NFE budget,
    the served default and the reference row (GRID's first), so a shorter run still checks the choice."""
    sampling = read_card(args.checkpoint_dir, DIGIT_CHECKPOINT).get("sampling", {})
    tuning = sampling.get("sweep", {}).get(f"seed_{TUNING_SEED}")
    if tuning is None:
        raise SystemExit(f"--top needs the tuning seed's sweep first: digits-sweep --seed {TUNING_SEED} --select")
    within = sorted((r for r in tuning["rows"] if r["nfe"] <= MAX_NFE), key=lambda r: -r["accuracy"])
    chosen = {r["label"] for r in within[: args.top]} | {config_label(GRID[0])}
    if "selection" in sampling:
        chosen.add(sampling["selection"]["chosen"])
    return chosen


# metrics.json name -> row field, for each evaluated configuration: digits_<key>_<name>.
_METRIC_FIELDS = (("acc", "accuracy"), ("nfe", "nfe"), ("msssim", "msssim"), ("fid", "fd"),
                  ("precision", "precision"), ("recall", "recall"))


def _real_figures(args: argparse.Namespace, clf: torch.nn.Module) -> tuple[dict, dict]:
    """Real val digits' MS-SSIM and feature floor, at the larger of the two generated counts, as metrics.json
    values and card metrics (the floor's count is recorded beside it: FD depends on it)."""
    per_digit = max(args.per_digit, args.ddpm_per_digit)
    msssim, reference = real_msssim(args.data, per_digit), real_reference(clf, args.data, per_digit)
    print(f"real MNIST-M val: per-label MS-SSIM {msssim:.4f}; {_floor_text(reference)}")
    floor = reference.floor
    results = {"digits_real_msssim": msssim, "digits_real_fid": floor["fd"],
               "digits_real_precision": floor["precision"], "digits_real_recall": floor["recall"]}
    card = {"real_msssim": msssim, "real_fid": floor["fd"], "real_precision": floor["precision"],
            "real_recall": floor["recall"], "real_images_per_digit": per_digit}
    return results, card


def attach_student(pipe: DigitPipeline, args: argparse.Namespace) -> str | None:
    """The distilled student (``--student``; absent: the shipped one beside the model) attached to be measured."""
    name = getattr(args, "student", DIGIT_STUDENT_CHECKPOINT)
    if not name or not card_path(args.checkpoint_dir, name).is_file():
        return None
    if pipe.student is None:
        pipe.attach_student(load_model(args.checkpoint_dir, name, device=next(pipe.unet.parameters()).device)[0])
    return name


def student_verdict(guided: dict, student: dict) -> dict:
    """``STUDENT_RULE``'s three checks of the student's row against the guided teacher's, and whether all pass."""
    checks = {
        "accuracy": student["accuracy"] >= guided["accuracy"] - STUDENT_ACCURACY_DROP,
        "msssim": abs(student["msssim"] - guided["msssim"]) <= STUDENT_MSSSIM_GAP,
        "fd": student["fd"] <= STUDENT_FD_RATIO * guided["fd"],
    }
    return {"checks": checks, "default": all(checks.values())}


def _measure_runs(args: argparse.Namespace, pipe: DigitPipeline, clf: torch.nn.Module, student: str | None) -> dict:
    """Each evaluated configuration's row by key: ``ddpm``, ``guided`` (the card's), ``distilled`` (the student)."""
    guided = SamplingConfig.card_default(read_card(args.checkpoint_dir, DIGIT_CHECKPOINT))
    runs = [("ddpm", guided.override(sampler="ddpm"), args.ddpm_per_digit), ("guided", guided, args.per_digit)]
    if student is not None:
        runs.append(("distilled", SamplingConfig(DISTILLED), args.per_digit))
    rows = {}
    for key, config, per_digit in runs:
        if per_digit <= 0:
            continue
        out_dir = Path(args.out) / key if args.out else None
        real = real_reference(clf, args.data, per_digit)
        row = measure(pipe, clf, config, per_digit=per_digit, seed=args.seed, batch=args.batch, real=real,
                      out_dir=out_dir)
        print(f"digits {row['label']}: {per_digit}/digit, seed {args.seed}, NFE {row['nfe']}, "
              f"accuracy {row['accuracy']:.4f}, MS-SSIM {row['msssim']:.4f}, {_feature_cells(row)}; per digit "
              + " ".join(f"{d}:{a:.2f}" for d, a in enumerate(row["per_class"])))
        rows[key] = row
    return rows


def _served_choice(args: argparse.Namespace, rows: dict, student: str | None) -> tuple[str, dict | None]:
    """Which row is the served default (``fewstep``), and the card's ``sampling.student`` record."""
    if student is None or "guided" not in rows:
        return "guided", None
    verdict = student_verdict(rows["guided"], rows["distilled"])
    print(f"distilled student {'is' if verdict['default'] else 'is not'} the default: "
          + ", ".join(f"{k} {'ok' if ok else 'FAILS'}" for k, ok in verdict["checks"].items()))
    record = {"checkpoint": student, "steps": DISTILLED_STEPS, **verdict, "rule": STUDENT_RULE, "seed": args.seed,
              "images_per_digit": args.per_digit, "command": args.command}
    return ("distilled" if verdict["default"] else "guided"), record


def evaluate_digits(args: argparse.Namespace) -> dict:
    """The guided default, the distilled student when there is one (and 400-step DDPM unless
    ``--ddpm-per-digit 0``) on the report seed; the student becomes the served default by ``STUDENT_RULE``.

    ``digits_fewstep_*`` are the served default's figures (whichever sampler ``sampling.student.default`` makes
    it), beside ``digits_guided_*`` and ``digits_distilled_*``. Each configuration's FD / precision / recall are
    against the first ``per_digit`` real val digits of each label, its own count; ``digits_real_fid`` and its
    precision / recall twins are the floor: a disjoint real set of the same size scored the same way.
    """
    pipe, _, clf = _load(args)
    device = next(pipe.unet.parameters()).device
    vx, vy = load_digits(args.data, "mnistm", "val")
    real_acc = (classify_uint8(clf, vx.to(device)).cpu() == vy).float().mean().item()
    print(f"evaluation classifier on real MNIST-M val ({len(vx)} images): accuracy {real_acc:.4f}")
    update_metrics(args.checkpoint_dir, EVAL_CLASSIFIER, {"mnistm_val_acc": round(real_acc, 4)})
    record_evaluation(args.checkpoint_dir, EVAL_CLASSIFIER, "mnistm_val", args.command)
    student = attach_student(pipe, args)
    rows = _measure_runs(args, pipe, clf, student)
    served, student_record = _served_choice(args, rows, student)
    if served in rows:
        rows["fewstep"] = rows[served]
    results: dict = {"eval_classifier_mnistm_val_acc": round(real_acc, 4)}
    card_metrics = {}
    for key, row in rows.items():
        results |= {f"digits_{key}_{name}": row[field] for name, field in _METRIC_FIELDS}
        card_metrics[f"eval_classifier_acc_{key}"] = row | {"command": args.command}
    if card_metrics:
        real_results, real_card = _real_figures(args, clf)
        results |= real_results
        card_metrics |= real_card
    card = read_card(args.checkpoint_dir, DIGIT_CHECKPOINT)
    unrecorded = _unrecorded(card.get("metrics", {}))
    metrics = {k: v for k, v in card.get("metrics", {}).items() if k not in STALE_METRICS + unrecorded} | card_metrics
    if student_record is not None:
        card.setdefault("sampling", {})["student"] = student_record
        update_metrics(args.checkpoint_dir, student, {k: rows["distilled"][k] for k in ("accuracy", "msssim", "fd")})
        record_evaluation(args.checkpoint_dir, student, "digits", args.command)
    write_card(args.checkpoint_dir, DIGIT_CHECKPOINT, card | {"metrics": metrics})
    record_evaluation(args.checkpoint_dir, DIGIT_CHECKPOINT, "digits", args.command)
    stale = tuple(f"digits_{k.removeprefix('eval_classifier_acc_')}_acc" for k in STALE_METRICS)
    gone = tuple(f"digits_{k.removeprefix('eval_classifier_acc_')}_{name}" for k in unrecorded if k not in card_metrics
                 for name, _ in _METRIC_FIELDS)
    return write_metrics(args.checkpoint_dir, results, drop=stale + gone)


def _unrecorded(card_metrics: dict) -> tuple[str, ...]:
    """Configurations measured by code that did not record its command: nobody can rerun or audit them, so an
    evaluation drops them (and their metrics.json figures) unless it measures them again."""
    return tuple(k for k, v in card_metrics.items()
                 if k.startswith("eval_classifier_acc_") and isinstance(v, dict) and "command" not in v)
