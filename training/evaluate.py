"""Evaluation commands: each prints its numbers and writes them into the model cards
and into ``checkpoints/metrics.json`` (never edited by hand).

    python -m training.evaluate faces [--n 1000]
    python -m training.evaluate digits [--per-digit 100] [--ddpm-per-digit 100]
    python -m training.evaluate digits-sweep --seed 1 --select   # choose the served sampler (see training.evaluate_digits)
    python -m training.evaluate digits-engines   # may the CPU engines run bf16? (see training.evaluate_runtime)
    python -m training.evaluate dann
    python -m training.evaluate all
    python -m training.evaluate faces-snapshots --run runs/dcgan-B --variant B   # pick the generator to ship
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from contract.roles import DANN_CHECKPOINTS, DIGIT_STUDENT_CHECKPOINT, FACE_CHECKPOINTS
from contract.settings import REPO
from models.checkpoints import (
    list_cards,
    load_model,
    read_card,
    save_model,
    update_metrics,
    write_card,
)
from models.loading import load_pipeline
from models.pipelines import DannClassifier, FacePipeline

from .common import command_line
from .dann import SERVED_METHOD, run_name
from .dann_intervals import ci95_metrics, metric_key
from .dann_table import TABLE_METHODS
from .data.datasets import load_faces
from .data.splits import VAL_SIZE, load_target
from .diversity import mean_pairwise_msssim
from .eval_common import device_of, record_evaluation, to_uint8_hwc, write_metrics
from .evaluate_digits import evaluate_digits, sweep
from .evaluate_runtime import measure_engines
from .intervals import wilson_interval

# Inception FID is not measured: it needs Inception weights (pytorch-fid downloads them), and
# the project's machines cannot fetch them. Faces: MS-SSIM; digits: MS-SSIM and FD on the project classifier.
FACE_MSSSIM = {"scales": 4, "max_pairs": 2000}  # 64x64 faces: four scales (see training.diversity)


# ---------------------------------------------------------------- faces
def _one_face_flags(images: np.ndarray) -> list[bool]:
    import dlib

    detector = dlib.get_frontal_face_detector()
    return [len(detector(np.ascontiguousarray(img), 1)) == 1 for img in images]


def hog_one_face_rate(images: np.ndarray, workers: int = 1) -> float:
    """Share of images in which dlib's HOG detector finds exactly one face.

    The course's grader used ``face_recognition.face_locations(img, model="hog")``,
    which is ``dlib.get_frontal_face_detector()(img, 1)`` (one upsampling).
    """
    if workers <= 1:
        return float(np.mean(_one_face_flags(images)))
    with ProcessPoolExecutor(workers) as pool:
        flags = [f for chunk in pool.map(_one_face_flags, np.array_split(images, workers)) for f in chunk]
    return float(np.mean(flags))


def generate_faces(pipe: FacePipeline, n: int, seed: int) -> np.ndarray:
    """``n`` faces of one generator, uint8 (N, 64, 64, 3), from a fixed seed."""
    gen = torch.Generator(pipe.device).manual_seed(seed)
    return np.concatenate([to_uint8_hwc(pipe(min(250, n - i), generator=gen).images) for i in range(0, n, 250)])


def face_diversity(images: np.ndarray, seed: int) -> float:
    """Mean pairwise MS-SSIM of uint8 (N, 64, 64, 3) faces (lower is more varied; see ``training.diversity``)."""
    return mean_pairwise_msssim(torch.from_numpy(images).permute(0, 3, 1, 2), seed=seed, **FACE_MSSSIM)


def evaluate_faces(args: argparse.Namespace) -> dict:
    """The HOG exactly-one-face rate (the course's measure) and diversity, of real val faces and of A and B.

    A generator that collapses onto a few good faces keeps a high HOG rate; its
    MS-SSIM, above that of real faces, shows it.
    """
    device = device_of(args.device)
    real = to_uint8_hwc(load_faces(args.data, "val", limit=args.n).float() / 255)
    real_rate, real_msssim = hog_one_face_rate(real, args.workers), face_diversity(real, args.seed)
    print(f"real CelebA face/val ({len(real)} images): exactly-one-face {real_rate:.4f}; MS-SSIM {real_msssim:.4f}")
    results: dict = {"faces_real_val_hog": round(real_rate, 4), "faces_real_msssim": round(real_msssim, 4)}
    for variant, name in FACE_CHECKPOINTS.items():
        pipe, _ = load_pipeline(args.checkpoint_dir, name, device=device)
        assert isinstance(pipe, FacePipeline)
        images = generate_faces(pipe, args.n, args.seed)
        rate, msssim = hog_one_face_rate(images, args.workers), face_diversity(images, args.seed)
        print(f"DCGAN {variant} ({args.n} faces, seed {args.seed}): exactly-one-face {rate:.4f}; MS-SSIM {msssim:.4f}")
        card = read_card(args.checkpoint_dir, name)
        card.get("metrics", {}).pop("fid_vs_face_val", None)  # never measured: no Inception weights here
        write_card(args.checkpoint_dir, name, card)
        update_metrics(
            args.checkpoint_dir,
            name,
            {
                "hog_one_face_rate": round(rate, 4),
                "hog_images": args.n,
                "hog_seed": args.seed,
                "msssim": round(msssim, 4),
                "msssim_pairs": min(FACE_MSSSIM["max_pairs"], args.n * (args.n - 1) // 2),
                "msssim_scales": FACE_MSSSIM["scales"],
                "real_val_msssim": round(real_msssim, 4),
            },
        )
        record_evaluation(args.checkpoint_dir, name, "faces", args.command)
        results[f"faces_{variant}_hog"] = round(rate, 4)
        results[f"faces_{variant}_msssim"] = round(msssim, 4)
    return write_metrics(args.checkpoint_dir, results, drop=("fid_A", "fid_B"))


def select_face_snapshot(args: argparse.Namespace) -> dict:
    """Ship the generator snapshot of a DCGAN run that scores best on the HOG rule.

    GAN samples do not improve monotonically with epochs, so training keeps a
    snapshot every few epochs (``--snapshot-every``) and this picks one. It scores
    them on faces of ``--seed`` (use another seed than the final evaluation's, so the
    reported rate is not the one the choice was made on) and rewrites the run's
    checkpoint with the chosen weights; its card records the candidates.
    """
    device = device_of(args.device)
    name = FACE_CHECKPOINTS[args.variant]
    snapshots = Path(args.run) / "snapshots"
    candidates = sorted(p.stem for p in snapshots.glob("epoch_*.json"))
    if not candidates:
        raise SystemExit(f"no snapshots in {snapshots}: train with --snapshot-every N")
    scores = {}
    for snap in candidates:
        pipe, card = load_pipeline(snapshots, snap, device=device)
        scores[snap] = hog_one_face_rate(generate_faces(pipe, args.n, args.seed), args.workers)
        print(f"{name} {snap} (epoch {card['training']['epochs_completed']}): exactly-one-face {scores[snap]:.4f} on {args.n} faces, seed {args.seed}")
    best = max(scores, key=lambda k: (scores[k], k))
    model, snap_card = load_model(snapshots, best)
    card = read_card(args.checkpoint_dir, name)
    training = card["training"]
    training["epochs_trained"] = training.get("epochs_completed")
    training["epochs_completed"] = snap_card["training"]["epochs_completed"]
    training["steps"] = snap_card["training"]["steps"]
    training["wall_time_s_at_snapshot"] = snap_card["training"].get("wall_time_s")
    training["selected_snapshot"] = {
        "epoch": snap_card["training"]["epochs_completed"],
        "rule": f"highest exactly-one-face rate on {args.n} faces of seed {args.seed}",
        "candidates": {int(k.removeprefix("epoch_")): round(v, 4) for k, v in scores.items()},
    }
    card.pop("metrics", None)  # measured on other weights
    save_model(model, args.checkpoint_dir, name, card)
    print(f"{name}: shipped {best} ({scores[best]:.4f})")
    return training["selected_snapshot"]


# ---------------------------------------------------------------- DANN
def dann_table_names(target: str) -> dict[str, str]:
    """Table row (method) -> the checkpoint shipped for it, for one target."""
    return {m: run_name(argparse.Namespace(target=target, method=m, name=None)) for m in TABLE_METHODS}


def evaluate_dann(args: argparse.Namespace) -> dict:
    """The shipped DANN checkpoints on their target's test split (the reported number) and val split.

    ``dann_<target>_test`` / ``_val`` are the served model's; ``dann_<target>_<method>``
    the other rows' test accuracies, each test accuracy with its 95% Wilson interval (``_ci95_lo`` / ``_hi``).
    The 3-seed table, and the served method's mean over seeds, are ``python -m training.dann_table``'s.
    """
    device = device_of(args.device)
    available = list_cards(args.checkpoint_dir)
    results: dict = {}
    for target in DANN_CHECKPOINTS:
        splits = {part: load_target(args.data, target, part) for part in ("val", "test")}
        for row, name in dann_table_names(target).items():
            if name not in available:
                print(f"{target} {row}: checkpoint {name} missing, skipped")
                continue
            clf, _ = load_pipeline(args.checkpoint_dir, name, device=device)
            assert isinstance(clf, DannClassifier)
            acc = {part: (clf(x.float().div(255)).labels == y).float().mean().item() for part, (x, y) in splits.items()}
            print(f"MNIST-M -> {target.upper():4s} {row:12s} ({name}): {target} test {acc['test']:.4f}, val {acc['val']:.4f}")
            update_metrics(args.checkpoint_dir, name, {
                "target_test_acc": round(acc["test"], 4), "target_test_images": len(splits["test"][1]),
                "target_val_acc": round(acc["val"], 4), "target_val_images": len(splits["val"][1]),
                "splits": f"training.data.splits (test: the layout's val.csv; val: {VAL_SIZE:,} drawn from its train.csv)",
            })
            record_evaluation(args.checkpoint_dir, name, "dann", args.command)
            if name == DANN_CHECKPOINTS[target]:  # the served model
                results[f"dann_{target}_val"] = round(acc["val"], 4)
            key = metric_key(target, row, SERVED_METHOD)
            results[key] = round(acc["test"], 4)
            results.update(ci95_metrics(key, wilson_interval(acc["test"], len(splits["test"][1]))))
    return write_metrics(args.checkpoint_dir, results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["faces", "digits", "digits-sweep", "digits-engines", "dann", "all", "faces-snapshots"], help="which models to evaluate (faces-snapshots: choose the DCGAN snapshot to ship; digits-engines: the CPU engines' bf16 against fp32)")
    parser.add_argument("--data", type=Path, default=Path("data/hw2_data"), help="root of the course layout")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"), help="checkpoints and cards to evaluate (cards are updated)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated samples")
    parser.add_argument("--n", type=int, default=1000, help="faces per variant")
    parser.add_argument("--per-digit", type=int, default=100, help="generated images per digit for the served (few-step) sampler")
    parser.add_argument("--sweep-per-digit", type=int, default=20, help="digits-sweep: generated images per digit and configuration")
    parser.add_argument("--top", type=int, default=0, help="digits-sweep on another seed: only the tuning seed's N best rows within the NFE budget, the default and the reference")
    parser.add_argument("--select", action="store_true", help="digits-sweep: choose the served default from this seed's table (the tuning seed only)")
    parser.add_argument("--student", default=DIGIT_STUDENT_CHECKPOINT, help="digits: the distilled student measured against the guided default, which it replaces if it matches it ('' to skip)")
    parser.add_argument("--ddpm-per-digit", type=int, default=100, help="generated images per digit for 400-step DDPM (0: skip)")
    parser.add_argument("--batch", type=int, default=100, help="sampling batch size")
    parser.add_argument("--out", type=Path, default=Path("runs/eval_digits"), help="where generated digits are saved as <digit>_<NNN>.png (and the sweep's rows)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the face detector")
    parser.add_argument("--run", type=Path, default=None, help="faces-snapshots: the DCGAN run folder (holds snapshots/)")
    parser.add_argument("--variant", choices=sorted(FACE_CHECKPOINTS), default=None, help="faces-snapshots: which DCGAN")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--remeasure", action="store_true", help="digits-engines: measure again a network whose card already records every engine for its weights, seed and count")
    parser.add_argument("--engine-cache-dir", type=Path, default=REPO / "var" / "cache" / "onnx", help="digits-engines: where the UNet's ONNX export is kept")
    args = parser.parse_args(argv)
    args.command = command_line(None if argv is None else ["evaluate", *argv], module="training.evaluate")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "digits-engines":
        measure_engines(args)
        return
    if args.what == "faces-snapshots":
        if args.run is None or args.variant is None:
            parser.error("faces-snapshots needs --run and --variant")
        select_face_snapshot(args)
        return
    if args.what in ("faces", "all"):
        evaluate_faces(args)
    if args.what == "digits-sweep":
        sweep(args)
    if args.what in ("digits", "all"):
        evaluate_digits(args)
    if args.what in ("dann", "all"):
        evaluate_dann(args)
    print(json.dumps(json.loads((args.checkpoint_dir / "metrics.json").read_text()), indent=2))


if __name__ == "__main__":
    main()
