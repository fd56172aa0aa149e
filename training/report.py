"""Regenerate every figure and table of the seed report from the shipped checkpoints.

    python -m training.report [--out docs/report]

Writes: ``faces_A.png`` / ``faces_B.png`` (the first 32 faces of each variant),
``digits_grid.png`` (ten of each digit, a row per digit), ``reverse_process.png``
and ``reverse_t<t>.png`` (the first "0" at t = 400, 320, 240, 160, 80, 0),
``tsne_<target>_by_class.png`` / ``tsne_<target>_by_domain.png``, and
``README.md`` with the tables, read from ``checkpoints/metrics.json`` and the cards.

``--parts`` redoes only some of them, e.g. ``--parts digits`` on a GPU machine, where
400-step sampling of the full-size UNet takes seconds rather than an hour of CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from contract.digits import FRAME_TIMESTEPS
from contract.roles import DANN_CHECKPOINTS, DIGIT_CHECKPOINT, FACE_CHECKPOINTS
from models.checkpoints import list_cards
from models.loading import load_pipeline
from models.pipelines import normalize_digits
from models.scheduler import SAMPLERS, SamplingConfig

from .common import save_grid
from .dann import METHODS, SERVED_METHOD
from .dann_intervals import metric_key
from .dann_table import TABLE_METHODS
from .data.datasets import load_digits
from .data.splits import VAL_SIZE, load_target
from .eval_common import device_of
from .evaluate_digits import config_label
from .intervals import t_quantile

PARTS = ("faces", "digits", "tsne", "tables")
DIGITS_CAPTION = "digits_grid.txt"


def faces(checkpoint_dir: Path, out: Path, device: torch.device, seed: int) -> None:
    for variant, name in FACE_CHECKPOINTS.items():
        pipe, _ = load_pipeline(checkpoint_dir, name, device=device)
        images = pipe(32, generator=torch.Generator(device).manual_seed(seed)).images
        save_grid(images, out / f"faces_{variant}.png", nrow=8)


def digits(checkpoint_dir: Path, out: Path, device: torch.device, seed: int, sampler: str) -> str:
    """The 10x10 grid and the reverse process; ``sampler`` "default" is the served configuration."""
    pipe, card = load_pipeline(checkpoint_dir, DIGIT_CHECKPOINT, device=device)
    default = SamplingConfig.card_default(card)
    config = default if sampler == "default" else default.override(sampler=sampler)
    labels = torch.arange(10).repeat_interleave(10)
    result = pipe(labels, sampler=config.sampler, steps=config.steps, guidance_scale=config.guidance_scale,
                  guidance_interval=config.guidance_interval, generator=torch.Generator(device).manual_seed(seed),
                  frame_timesteps=FRAME_TIMESTEPS)
    save_grid(result.images, out / "digits_grid.png", nrow=10)
    frames = [result.frames[t] for t in FRAME_TIMESTEPS]
    save_grid(torch.stack(frames), out / "reverse_process.png", nrow=len(frames))
    for t, frame in zip(FRAME_TIMESTEPS, frames):
        save_grid(frame[None], out / f"reverse_t{t:03d}.png", nrow=1)
    caption = (f"{config_label(config, pipe.schedule.num_train_timesteps)}, "
               f"{result.nfe} network evaluations per image, seed {seed}")
    # The tables quote how the grid was drawn, also when a later run redoes only the tables.
    (out / DIGITS_CAPTION).write_text(caption + "\n")
    return caption


@torch.no_grad()
def tsne_maps(checkpoint_dir: Path, data: Path, out: Path, device: torch.device, per_domain: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    src_x, src_y = load_digits(data, "mnistm", "val", limit=per_domain)
    for target, name in DANN_CHECKPOINTS.items():
        clf, _ = load_pipeline(checkpoint_dir, name, device=device)
        tgt_x, tgt_y = (t[:per_domain] for t in load_target(data, target, "test"))
        x = torch.cat([src_x, tgt_x]).float().div(255).to(device)
        feats = clf.model.feature(normalize_digits(x, clf.normalize)).cpu().numpy()
        emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(feats)
        classes = torch.cat([src_y, tgt_y]).numpy()
        domains = np.array([0] * len(src_x) + [1] * len(tgt_x))
        for by, colours, legend in (
            ("class", classes, [str(d) for d in range(10)]),
            ("domain", domains, ["MNIST-M (source)", f"{target.upper()} (target)"]),
        ):
            fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
            cmap = plt.get_cmap("tab10")
            for k, text in enumerate(legend):
                sel = colours == k
                ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=cmap(k), label=text)
            ax.set_title(f"DANN features, MNIST-M -> {target.upper()}, by {by}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(markerscale=3, fontsize=8, loc="best")
            fig.tight_layout()
            fig.savefig(out / f"tsne_{target}_by_{by}.png")
            plt.close(fig)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _digit_run(card_metrics: dict, key: str) -> str:
    """How a digit accuracy was measured, from the diffusion model's card."""
    run = card_metrics.get(f"eval_classifier_acc_{key}")
    if not run:
        return ""
    label = run.get("label") or f"{run['sampler']}-{run['steps']} g{run['guidance_scale']:g}"
    nfe = f", {run['nfe']} NFE" if "nfe" in run else ""
    return f" ({label}{nfe}, {run['images_per_digit']} per digit, seed {run['seed']})"


def _fidelity_lines(metrics: dict, digit_metrics: dict, card: dict) -> list[str]:
    """Accuracy beside diversity and fidelity for the guided default, the distilled student and real digits:
    a sampler that trades diversity for accuracy shows in recall and FD (``training.feature_metrics``)."""
    if "digits_real_fid" not in metrics:
        return []
    count = digit_metrics.get("real_images_per_digit")
    lines = ["", (f"Fidelity and coverage in the evaluation classifier's features, against the first {count} real "
                  "MNIST-M val digits of each label (Frechet distance, lower is closer; k-NN precision and recall of "
                  "Kynkaanniemi et al. 2019); the real row is a second, disjoint real set of that size, the floor:"),
             "", "| digits | NFE | accuracy | MS-SSIM | FD | precision | recall |", "|---|---|---|---|---|---|---|",
             (f"| real MNIST-M val | - | {_pct(metrics.get('eval_classifier_mnistm_val_acc'))} | "
              f"{_num(metrics.get('digits_real_msssim'))} | {_num(metrics.get('digits_real_fid'))} | "
              f"{_num(metrics.get('digits_real_precision'))} | {_num(metrics.get('digits_real_recall'))} |")]
    for key, what in (("guided", "guided default"), ("distilled", "distilled student")):
        if f"digits_{key}_acc" in metrics:
            lines.append(f"| {what}{_digit_run(digit_metrics, key)} | {metrics.get(f'digits_{key}_nfe')} | "
                         + " | ".join(_num(metrics.get(f"digits_{key}_{m}")) for m in ("acc", "msssim", "fid",
                                                                                       "precision", "recall")) + " |")
    student = card.get("sampling", {}).get("student")
    if student:
        verdict = "is" if student["default"] else "is not"
        failed = [k for k, ok in student["checks"].items() if not ok]
        lines += ["", f"The distilled student {verdict} the served default"
                  + (f" (it fails on {', '.join(failed)})" if failed else "") + f": {student['rule']}."]
    return lines


def sampler_sweep_lines(card: dict) -> list[str]:
    """The sampler sweep of the diffusion card: each configuration on the tuning and the report seed."""
    sampling = card.get("sampling", {})
    sweep, selection = sampling.get("sweep", {}), sampling.get("selection")
    if not sweep:
        return []
    seeds = sorted(sweep, key=lambda k: sweep[k]["seed"], reverse=True)  # the tuning seed (1) first
    by_seed = {k: {r["label"]: r for r in sweep[k]["rows"]} for k in seeds}
    head = " | ".join(
        f"accuracy / MS-SSIM, seed {sweep[k]['seed']} ({sweep[k]['images_per_digit']} per digit)" for k in seeds
    )
    real = ", ".join(f"{sweep[k]['real_msssim']:.3f} for seed {sweep[k]['seed']}'s count" for k in seeds)
    lines = ["", ("Sampler sweep (`python -m training.evaluate digits-sweep`; lower MS-SSIM is more varied; "
                  f"real MNIST-M val: {real}):"), "",
             f"| configuration | NFE | {head} |", "|---|---|" + "---|" * len(seeds)]
    for label, row in by_seed[seeds[0]].items():
        cells = [f"{by_seed[k][label]['accuracy']:.3f} / {by_seed[k][label]['msssim']:.3f}" if label in by_seed[k]
                 else "-" for k in seeds]
        mark = " **(served)**" if selection and label == selection["chosen"] else ""
        lines.append(f"| {label}{mark} | {row['nfe']} | " + " | ".join(cells) + " |")
    if selection:
        lines += ["", f"The served default was chosen on seed {selection['tuning_seed']}: {selection['rule']}."]
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _face_sample(cards: dict, name: str | None = None) -> str:
    """How many faces of which seed a face row was measured on (from the cards the evaluation wrote)."""
    names = [name] if name else [n for n in FACE_CHECKPOINTS.values()]
    metrics = next((cards.get(n, {}).get("metrics", {}) for n in names if cards.get(n, {}).get("metrics")), {})
    if "hog_images" not in metrics:
        return "-"
    return f"{metrics['hog_images']:,}, seed {metrics['hog_seed']}" if name else f"{metrics['hog_images']:,}"


# The seed report's accuracies (source only, DANN, target only), measured on the course's own
# hw2_data val folders: other images than this layout's splits, so a reference, not a comparison.
SEED_REPORT = {"svhn": {"source_only": 0.3729, "dann_plain": 0.4460, "target_only": 0.9295},
               "usps": {"source_only": 0.6982, "dann_plain": 0.8017, "target_only": 0.9838}}


def _interval(cell: dict | None, digits: int = 4) -> str:
    """A mean over seeds with its 95% t interval."""
    if not cell:
        return "-"
    if not cell.get("ci95"):  # a lone run, or a table written before the intervals
        return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} [{cell['ci95'][0]:.{digits}f}, {cell['ci95'][1]:.{digits}f}]"


def _interval_note(table: dict, seeds: list[int]) -> str:
    """What the table's intervals are, and the one run's sampling error they leave out."""
    widths = []
    for target, rows in table["rows"].items():
        row = rows.get(table.get("served_method", SERVED_METHOD), {})
        if "runs_ci95" in row.get("test", {}):
            lo, hi = row["test"]["runs_ci95"][row["seeds"].index(table["shipped_seed"])]
            widths.append(f"±{(hi - lo) / 2:.3f} on {target.upper()}'s {table['splits'][target]['test']:,}")
    single = (f" One run's own sampling error on the test images, its 95% Wilson (binomial) interval, is about "
              f"{' and '.join(widths)} for the served method." if widths else "")
    return (f"Each cell: the mean over the {len(seeds)} seeds and its two-sided 95% Student t interval, "
            f"mean ± t(0.975, {len(seeds) - 1}) · s/√{len(seeds)} with t = {t_quantile(max(len(seeds) - 1, 1)):.3f} "
            "and s the sample standard deviation of the runs (the JSON holds s, every run and each run's Wilson "
            "interval). It measures how much the training seed moves the score on these fixed images; the test "
            f"set's own sampling error, shared by every seed, is not in it.{single}")


def _seed_table_lines(table: dict) -> list[str]:
    """The 3-seed table of ``python -m training.dann_table``'s JSON, a row per method, a mean and interval per cell."""
    targets = list(table["rows"])
    methods = list(dict.fromkeys(m for t in targets for m in table["rows"][t]))
    seeds = sorted({s for t in targets for r in table["rows"][t].values() for s in r["seeds"]})
    test_images = ", ".join(f"{t.upper()} {table['splits'][t]['test']:,}" for t in targets)
    lines = ["", (f"Every row trained to the end of the same plan: {table['steps']:,} steps of batch "
                  f"{table['batch_size']} (source and target), seeds {', '.join(map(str, seeds))}, "
                  f"on {'; '.join(table['hardware'])}"
                  f"{f', {n} runs at a time' if (n := table.get('runs_at_a_time', 1)) > 1 else ''} "
                  f"(`{table['command']}`); test images: {test_images}."), "",
             "| method | " + " | ".join(f"MNIST-M -> {t.upper()} test | val" for t in targets)
             + " | seconds per run (" + " / ".join(t.upper() for t in targets) + ") | seed report (course data) |",
             "|---|" + "---|---|" * len(targets) + "---|---|"]
    for method in methods:
        first = next(table["rows"][t][method] for t in targets if method in table["rows"][t])
        cells = [f"{_interval(table['rows'][t].get(method, {}).get('test'))} | "
                 f"{_interval(table['rows'][t].get(method, {}).get('val'))}"
                 for t in targets]
        ref = " / ".join(f"{SEED_REPORT[t][method]:.4f}" for t in targets if method in SEED_REPORT.get(t, {})) or "-"
        served = " **(served)**" if method == SERVED_METHOD else ""
        seconds = " / ".join(_interval(table["rows"][t][method]["wall_time_s"], digits=0) if method in table["rows"][t]
                             else "-" for t in targets)
        lines.append(f"| {first['summary']}{served} | " + " | ".join(cells) + f" | {seconds} | {ref} |")
    return lines + ["", _interval_note(table, seeds), "",
                    (f"The served method was chosen on the target val accuracy of a tuning seed outside the table; "
                     f"the served checkpoint of each row is seed {table['shipped_seed']}, "
                     "fixed before any run was measured. "
                     "The seed report's figures were measured on the course's own hw2_data val folders, other images "
                     "than these splits: a reference, not a like-for-like comparison.")]


def _with_ci95(metrics: dict, key: str) -> str:
    """A shipped model's test accuracy with its 95% Wilson interval, when metrics.json holds one."""
    lo, hi = metrics.get(f"{key}_ci95_lo"), metrics.get(f"{key}_ci95_hi")
    return _pct(metrics.get(key)) + ("" if lo is None or hi is None else f" [{lo:.4f}, {hi:.4f}]")


def dann_lines(metrics: dict, cards: dict, out: Path) -> list[str]:
    """The 3-seed table (from ``python -m training.dann_table``'s JSON) and the shipped models on the test split."""
    table_path = out / "dann_table.json"
    lines = [("Splits (`training.data.splits`): each target has an *adapt* split (images only, "
              f"what training adapts to), a *val* split ({VAL_SIZE:,} labelled images drawn from its train set: "
              "the only target labels any choice read) and a *test* split "
              "(the layout's `val.csv`, read only to report).")]
    if table_path.is_file():
        lines += _seed_table_lines(json.loads(table_path.read_text()))
    lines += ["", ("The shipped checkpoints on the test split (`python -m training.evaluate dann`), each with its "
                   "95% Wilson score interval: the binomial sampling error of one run's accuracy on the split's "
                   "images:"), "",
              "| checkpoint | " + " | ".join(f"MNIST-M -> {t.upper()}" for t in DANN_CHECKPOINTS) + " |",
              "|---|" + "---|" * len(DANN_CHECKPOINTS)]
    for method in TABLE_METHODS:
        keys = [metric_key(t, method, SERVED_METHOD) for t in DANN_CHECKPOINTS]
        lines.append(f"| {METHODS[method].summary} | " + " | ".join(_with_ci95(metrics, k) for k in keys) + " |")
    return lines + [""]


def _face_training(hw: dict) -> str:
    """Where and how long a face model trained, and which snapshot was kept when one was chosen."""
    trained = f"{hw.get('hardware', '?')}, {hw.get('wall_time_s', '?')} s, {hw.get('epochs_completed', '?')} epochs"
    if "selected_snapshot" in hw:
        trained = (f"{hw.get('hardware', '?')}: the epoch-{hw['selected_snapshot']['epoch']} snapshot of a run of "
                   f"{hw.get('epochs_trained', '?')} epochs in {hw.get('wall_time_s', '?')} s, "
                   f"chosen by {hw['selected_snapshot']['rule']}")
    return trained


def _face_lines(metrics: dict, cards: dict) -> list[str]:
    """Problem 1: what the face measures mean, real and generated faces measured, and each model's figure."""
    lines = [
        "## Problem 1: DCGAN faces",
        "",
        ("Exactly one face: the share of faces in which dlib's HOG detector finds one face (the course's measure). "
         "MS-SSIM: the mean over random pairs of faces of their multi-scale structural similarity (lower is more "
         "varied; a generator that collapses onto a few faces scores high). FID is not measured: it needs Inception "
         "weights that these machines cannot download."),
        "",
        "| faces | exactly one face (dlib HOG) | MS-SSIM | images, seed | trained on |",
        "|---|---|---|---|---|",
        (f"| real CelebA face/val | {_pct(metrics.get('faces_real_val_hog'))} | "
         f"{_num(metrics.get('faces_real_msssim'))} | {_face_sample(cards)} | - |"),
    ]
    for variant, name in FACE_CHECKPOINTS.items():
        trained = _face_training(cards.get(name, {}).get("training", {}))
        lines.append(f"| DCGAN {variant} | {_pct(metrics.get(f'faces_{variant}_hog'))} | "
                     f"{_num(metrics.get(f'faces_{variant}_msssim'))} | {_face_sample(cards, name)} | {trained} |")
    return lines + [
        "",
        "Model A (first 32 faces, seed 0): ![A](faces_A.png)",
        "",
        "Model B (first 32 faces, seed 0): ![B](faces_B.png)",
        "",
    ]


def _digit_lines(metrics: dict, cards: dict, digits_caption: str) -> list[str]:
    """Problem 2: the figures, the evaluation classifier's accuracies, the diversity and the sampler sweep."""
    digit_metrics = cards.get(DIGIT_CHECKPOINT, {}).get("metrics", {})
    return [
        "## Problem 2: conditional diffusion digits",
        "",
        f"Ten of each digit ({digits_caption}): ![grid](digits_grid.png)",
        "",
        "Reverse process of the first \"0\", t = 400, 320, 240, 160, 80, 0: ![reverse](reverse_process.png)",
        "",
        "| what | accuracy of the evaluation classifier |",
        "|---|---|",
        f"| real MNIST-M val | {_pct(metrics.get('eval_classifier_mnistm_val_acc'))} |",
        (f"| generated, DDPM 400 steps{_digit_run(digit_metrics, 'ddpm')} | {_pct(metrics.get('digits_ddpm_acc'))} |"
         if "digits_ddpm_acc" in metrics else
         "| generated, DDPM 400 steps | not measured by today's code (800 network evaluations per digit: "
         "`python -m training.evaluate digits` on a GPU) |"),
        (f"| generated, served few-step default{_digit_run(digit_metrics, 'fewstep')} | "
         f"{_pct(metrics.get('digits_fewstep_acc'))} |"),
        "",
        (f"Diversity, per-label mean pairwise MS-SSIM (lower is more varied): served default "
         f"{_pct(metrics.get('digits_fewstep_msssim'))}, real MNIST-M val {_pct(metrics.get('digits_real_msssim'))}."),
        *_fidelity_lines(metrics, digit_metrics, cards.get(DIGIT_CHECKPOINT, {})),
        *sampler_sweep_lines(cards.get(DIGIT_CHECKPOINT, {})),
        "",
    ]


def _tsne_lines() -> list[str]:
    """Each target's t-SNE figures, by class and by domain."""
    lines = []
    for target in DANN_CHECKPOINTS:
        lines += [(f"t-SNE of DANN features, MNIST-M -> {target.upper()}: by class ![](tsne_{target}_by_class.png) "
                   f"by domain ![](tsne_{target}_by_domain.png)"), ""]
    return lines


def _checkpoint_lines(cards: dict) -> list[str]:
    """Every checkpoint's kind, size and training run."""
    lines = ["## Checkpoints", "", "| name | kind | parameters | hardware | wall time (s) | steps |",
             "|---|---|---|---|---|---|"]
    for name, card in cards.items():
        tr = card.get("training", {})
        lines.append(f"| {name} | {card['kind']} | {card['weights']['parameters']:,} | {tr.get('hardware', '?')} | "
                     f"{tr.get('wall_time_s', '?')} | {tr.get('steps', '?')} |")
    return lines


def tables(checkpoint_dir: Path, out: Path, digits_caption: str) -> None:
    metrics_path = checkpoint_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    cards = list_cards(checkpoint_dir)
    lines = [
        "# Report: DLCV 2022 HW2, regenerated from the shipped checkpoints",
        "",
        "Made by `python -m training.report`; the numbers come from `checkpoints/metrics.json`,",
        "which the evaluation commands (`python -m training.evaluate all`) write.",
        "",
        *_face_lines(metrics, cards),
        *_digit_lines(metrics, cards, digits_caption),
        "## Problem 3: DANN",
        "",
        *dann_lines(metrics, cards, out),
        *_tsne_lines(),
        *_checkpoint_lines(cards),
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/hw2_data"), help="root of the course layout (t-SNE inputs)"
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"), help="the checkpoints to draw from")
    parser.add_argument("--out", type=Path, default=Path("docs/report"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generated figure")
    parser.add_argument(
        "--digit-sampler",
        choices=["default", *SAMPLERS],
        default="default",
        help="sampler of the 10x10 grid and the reverse-process frames (default: the served configuration)",
    )
    parser.add_argument("--tsne-per-domain", type=int, default=1000, help="val images per domain in the t-SNE maps")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}: choose from {','.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    device = device_of(args.device)
    if "faces" in parts:
        faces(args.checkpoint_dir, args.out, device, args.seed)
    if "digits" in parts:
        digits(args.checkpoint_dir, args.out, device, args.seed, args.digit_sampler)
    if "tsne" in parts:
        tsne_maps(args.checkpoint_dir, args.data, args.out, device, args.tsne_per_domain, args.seed)
    if "tables" in parts:
        caption_file = args.out / DIGITS_CAPTION
        caption = caption_file.read_text().strip() if caption_file.is_file() else "sampler not recorded"
        tables(args.checkpoint_dir, args.out, caption)
    print(f"report ({','.join(parts)}) written to {args.out}")


if __name__ == "__main__":
    main()
