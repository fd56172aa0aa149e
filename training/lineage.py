"""Runs that continue a shipped checkpoint (``--init-from``): finding it, and the lineage cards carry.

A model trained across several short GPU calls has several runs behind it. Its
card lists them all in ``training.lineage`` (oldest first, the run that wrote the
card last) and sums them in ``training.total_steps``, ``total_epochs`` and
``total_wall_time_s``, so the card of a continued model never reads as one short
run.
"""

from __future__ import annotations

from pathlib import Path

from models.checkpoints import CheckpointError, card_path

# What a lineage entry keeps of a run's ``training`` card fields.
RUN_KEYS = ("command", "hardware", "wall_time_s", "steps", "epochs", "finished", "init_from")


def resolve_checkpoint(spec: str | Path, default_name: str) -> tuple[Path, str]:
    """``checkpoints/ddpm-digits`` (or its ``.json`` card), or ``checkpoints`` plus ``default_name`` -> (folder, name)."""
    spec = Path(spec)
    if spec.suffix == ".json":
        spec = spec.with_suffix("")
    if spec.is_dir() and card_path(spec, default_name).is_file():
        return spec, default_name
    if card_path(spec.parent, spec.name).is_file():
        return spec.parent, spec.name
    raise CheckpointError(
        f"--init-from {spec}: found neither {card_path(spec, default_name)} nor {card_path(spec.parent, spec.name)}"
    )


def run_entry(training: dict) -> dict:
    """One run of a lineage, from that run's ``training`` card fields."""
    entry = {key: training.get(key) for key in RUN_KEYS}
    if entry["epochs"] is None:
        entry["epochs"] = training.get("epochs_completed")
    return {key: value for key, value in entry.items() if value is not None}


def lineage_of(card: dict) -> list[dict]:
    """Every run behind a checkpoint, oldest first, flattened.

    A card written by a continued run already lists its whole lineage (itself
    last); an older card stands for one run, read from its own fields.
    """
    training = card.get("training", {})
    runs: list[dict] = []
    for run in training.get("lineage") or [training]:
        # A hand-edited card may nest a lineage inside an entry: its runs come first.
        runs.extend(lineage_of({"training": run}) if run.get("lineage") else [run_entry(run)])
    return runs


def totals(lineage: list[dict]) -> dict:
    """Steps, epochs and wall time summed over every run of a lineage (a missing figure counts as 0)."""
    return {
        "total_steps": sum(run.get("steps") or 0 for run in lineage),
        "total_epochs": sum(run.get("epochs") or 0 for run in lineage),
        "total_wall_time_s": round(sum(run.get("wall_time_s") or 0 for run in lineage), 1),
    }
