"""The DANN table: each method x target x seed trained to the end of one step plan, measured on val and test.

    python -m training.dann_table --seeds 0,1,2 --steps 2000 --jobs 2   # trains the runs not yet done, then measures
    python -m training.dann_table --ship                                  # seed 0 of each row -> checkpoints/
    python -m training.dann_table --summarize                             # statistics again from the stored runs

Runs go to ``runs/dann-table/<target>-<method>-s<seed>/`` and their checkpoints to
``runs/dann-table/checkpoints/``; a run whose card says it completed the plan is
not trained again, so an interrupted sweep resumes where it stopped. Each run is
its own ``python -m training dann`` process, so its card holds the command that
reruns it.

The table (``docs/report/dann_table.json``) has every run's accuracy on the
target's val split (the only labels a choice may read) and its test split (read
only here, to report), with mean, sample standard deviation and a 95% Student t
interval over seeds, and each run's 95% Wilson (binomial) interval on its split's
images: all computed from the stored per-run figures (``training.dann_intervals``),
so ``--summarize`` recomputes them from the JSON alone, without the runs. The
shipped checkpoint of each row is seed 0, fixed before any run was measured, so
no test or val score picks the weights that are served; ``--ship`` and
``--summarize`` write its test interval and the served method's mean over seeds
with their intervals to ``checkpoints/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from models.checkpoints import list_cards, load_model, save_model
from models.loading import load_pipeline
from models.pipelines import DannClassifier

from .common import REPO, command_line
from .dann import METHODS, SERVED_METHOD, run_name
from .dann_intervals import interval_metrics, summarize_table
from .data.splits import TARGETS, load_target
from .eval_common import write_metrics

TABLE_METHODS = ("source_only", "dann_plain", "dann", SERVED_METHOD, "target_only")
SHIPPED_SEED = 0
TABLE_FILE = Path("docs/report/dann_table.json")


def run_id(target: str, method: str, seed: int) -> str:
    return f"dann-{target}-{method.replace('_', '-')}-s{seed}"


def run_command(args: argparse.Namespace, target: str, method: str, seed: int) -> list[str]:
    run = args.root / run_id(target, method, seed)
    return [sys.executable, "-m", "training", "dann", "--target", target, "--method", method, "--seed", str(seed),
            "--max-steps", str(args.steps), "--data", str(args.data), "--name", run_id(target, method, seed),
            "--out", str(run), "--checkpoint-dir", str(args.root / "checkpoints"), "--resume", "--cpu"]


def _done(args: argparse.Namespace, name: str) -> bool:
    card = list_cards(args.root / "checkpoints").get(name)
    return bool(card and card["training"].get("completed") and card["training"]["steps"] == args.steps)


def train_missing(args: argparse.Namespace, runs: list[tuple[str, str, int]]) -> None:
    """Each missing run in its own process, ``--jobs`` at a time with ``--threads`` torch threads each."""
    todo = [r for r in runs if not _done(args, run_id(*r))]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already done; training {len(todo)}, {args.jobs} at a time")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}

    def one(run: tuple[str, str, int]) -> None:
        log = args.root / f"{run_id(*run)}.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("w") as fh:
            code = subprocess.run(run_command(args, *run), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        print(f"{run_id(*run)}: {'done' if code == 0 else f'FAILED ({code}), see {log}'} in {time.monotonic() - started:.0f} s", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))


def summarized(table: dict) -> dict:
    """The table with its served row named and every statistic recomputed from its runs."""
    table["served_method"] = SERVED_METHOD
    return summarize_table(table)


def write_table(args: argparse.Namespace, table: dict) -> dict:
    table = summarized(table)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(json.dumps(table, indent=2) + "\n")
    print(f"table -> {args.table}")
    return table


def summarize(args: argparse.Namespace) -> dict:
    """``--summarize``: the stored table's statistics again from its own runs, and its intervals in metrics.json."""
    table = write_table(args, json.loads(args.table.read_text()))
    metrics = interval_metrics(table, args.methods)
    write_metrics(args.checkpoint_dir, metrics)
    print(f"{len(metrics)} interval figures -> {args.checkpoint_dir / 'metrics.json'}")
    return table


def measure(args: argparse.Namespace, runs: list[tuple[str, str, int]]) -> dict:
    """Every completed run on its target's val and test split; the table's JSON."""
    ckpt, cards = args.root / "checkpoints", list_cards(args.root / "checkpoints")
    splits = {t: {p: load_target(args.data, t, p) for p in ("val", "test")} for t in args.targets}
    rows: dict = {t: {} for t in args.targets}
    for target, method, seed in runs:
        name = run_id(target, method, seed)
        if not _done(args, name):
            print(f"{name}: not completed, left out of the table")
            continue
        clf, card = load_pipeline(ckpt, name)
        assert isinstance(clf, DannClassifier)
        row = rows[target].setdefault(method, {"summary": METHODS[method].summary, "seeds": [], "val": [], "test": [], "wall_time_s": []})
        for part, (x, y) in splits[target].items():
            row[part].append((clf(x.float().div(255)).labels == y).float().mean().item())
        row["seeds"].append(seed)
        row["wall_time_s"].append(card["training"]["wall_time_s"])
        print(f"{name}: val {row['val'][-1]:.4f}, test {row['test'][-1]:.4f}")
    hardware = sorted({c["training"]["hardware"] for n, c in cards.items() if n.startswith("dann-")})
    table = {
        "command": args.command,
        "steps": args.steps, "batch_size": 64, "hardware": hardware, "shipped_seed": SHIPPED_SEED,
        "runs_at_a_time": args.jobs, "threads_per_run": args.threads,
        "splits": {t: {p: len(splits[t][p][1]) for p in ("val", "test")} for t in args.targets},
        # Only the runs: write_table computes every statistic from them, as --summarize does.
        "rows": {t: {m: {"summary": r["summary"], "seeds": r["seeds"],
                         **{k: {"runs": r[k]} for k in ("val", "test", "wall_time_s")}}
                     for m, r in rows[t].items()} for t in args.targets},
    }
    return write_table(args, table)


def ship(args: argparse.Namespace) -> None:
    """Seed 0 of each row to ``--checkpoint-dir`` under its served name (dann-svhn, dann-svhn-plain, ...)."""
    for target in args.targets:
        for method in args.methods:
            name = run_id(target, method, SHIPPED_SEED)
            model, card = load_model(args.root / "checkpoints", name)
            served = run_name(argparse.Namespace(target=target, method=method, name=None))
            card["name"] = served
            card["training"]["table_run"] = {"run": name, "table": str(args.table), "rule": f"seed {SHIPPED_SEED}, fixed in advance"}
            card.pop("metrics", None)  # `python -m training.evaluate dann` measures the shipped weights
            save_model(model, args.checkpoint_dir, served, card)
            print(f"{name} -> {args.checkpoint_dir / served}")
    # What ships is the table's seed-0 run: its test interval and the served method's seed mean go with it.
    write_metrics(args.checkpoint_dir, interval_metrics(summarized(json.loads(args.table.read_text())), args.methods))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.dann_table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/hw2_data"), help="root of the course layout")
    parser.add_argument("--root", type=Path, default=Path("runs/dann-table"), help="run folders and their checkpoints")
    parser.add_argument("--table", type=Path, default=TABLE_FILE, help="where the table's JSON is written")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"),
                        help="--ship: where the served checkpoints go; --ship and --summarize: whose metrics.json")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target domains")
    parser.add_argument("--methods", default=",".join(TABLE_METHODS), help=f"comma-separated rows, from {','.join(METHODS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=2000, help="the step plan every run completes")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--ship", action="store_true", help="copy seed 0 of each row to --checkpoint-dir instead of training")
    parser.add_argument("--summarize", action="store_true",
                        help="recompute --table's statistics and intervals from its stored runs (nothing trained "
                             "or measured) and write the served models' intervals to --checkpoint-dir/metrics.json")
    args = parser.parse_args(argv)
    args.command = command_line(None if argv is None else ["dann_table", *argv], module="training.dann_table")
    args.targets, args.methods = args.targets.split(","), args.methods.split(",")
    if unknown := set(args.methods) - set(METHODS):
        parser.error(f"unknown methods {sorted(unknown)}; choose from {','.join(METHODS)}")
    if args.ship:
        ship(args)
        return
    if args.summarize:
        summarize(args)
        return
    # Seed by seed, so a sweep cut short still holds whole seeds of every row.
    runs = [(t, m, int(s)) for s in args.seeds.split(",") for t in args.targets for m in args.methods]
    train_missing(args, runs)
    measure(args, runs)


if __name__ == "__main__":
    main()
