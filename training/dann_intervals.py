"""The DANN table's statistics and the served models' 95% intervals, from the table's stored per-run figures.

One home for both: ``python -m training.dann_table`` calls :func:`summarize_table` after measuring the runs and
on ``--summarize`` (the stored JSON alone, nothing trained or measured), and :func:`interval_metrics` gives
``checkpoints/metrics.json`` its interval keys. Torch-free, so the checks of the stored files stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable

from .intervals import T_METHOD, WILSON_METHOD, summarize

ACCURACY_PARTS = ("val", "test")


def summarize_table(table: dict) -> dict:
    """Every row's mean, std and intervals recomputed from its ``runs`` (accuracies and wall times), in place."""
    for target, rows in table["rows"].items():
        for row in rows.values():
            for part in ACCURACY_PARTS:
                row[part] = summarize(row[part]["runs"], table["splits"][target][part])
            row["wall_time_s"] = summarize(row["wall_time_s"]["runs"])
    table["intervals"] = {"ci95": T_METHOD, "runs_ci95": WILSON_METHOD}
    return table


def metric_key(target: str, method: str, served: str) -> str:
    """metrics.json's key of a shipped row's test accuracy; the served method's is ``dann_<target>_test``."""
    return f"dann_{target}_test" if method == served else f"dann_{target}_{method}"


def ci95_metrics(key: str, interval: list[float] | tuple[float, float] | None) -> dict:
    """An interval as two flat numbers, since metrics.json holds only numbers: ``<key>_ci95_lo`` / ``_hi``."""
    if interval is None:
        return {}
    return {f"{key}_ci95_lo": round(interval[0], 4), f"{key}_ci95_hi": round(interval[1], 4)}


def interval_metrics(table: dict, methods: Iterable[str] | None = None) -> dict:
    """metrics.json's intervals from a summarized table: each shipped row's test accuracy (its seed
    ``shipped_seed`` run, Wilson) and the served method's mean over seeds (``dann_<target>_test_seed_mean``, t)."""
    served, shipped_seed = table["served_method"], table["shipped_seed"]
    out: dict = {}
    for target, rows in table["rows"].items():
        for method, row in rows.items():
            if methods is not None and method not in methods:
                continue
            run = row["seeds"].index(shipped_seed)
            out.update(ci95_metrics(metric_key(target, method, served), row["test"]["runs_ci95"][run]))
        if served in rows and (methods is None or served in methods):
            mean_key = f"dann_{target}_test_seed_mean"
            out[mean_key] = rows[served]["test"]["mean"]
            out.update(ci95_metrics(mean_key, rows[served]["test"]["ci95"]))
    return out
