"""Helpers the benchmark sections share: timing, percentiles, the machine they ran on."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p95), p95 by the nearest-rank method (an observed value, never interpolated)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan"), float("nan")
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 n)
    return statistics.median(ordered), ordered[rank - 1]


def timed(fn: Callable[[int], Any], count: int, warmup: int = 1) -> tuple[list[float], list[Any]]:
    """Call ``fn(i)`` ``count`` times, after ``warmup`` uncounted calls; seconds per call and the outputs."""
    for i in range(warmup):
        fn(-1 - i)
    times, outputs = [], []
    for i in range(count):
        start = time.perf_counter()
        outputs.append(fn(i))
        times.append(time.perf_counter() - start)
    return times, outputs


def ms(seconds: float) -> float | None:
    """Milliseconds, rounded; None for no measurement (NaN is not JSON)."""
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the CPU count, other work shared the machine."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average_at_end": load_average(),
    }


def stack_env(args: Any, root: Path, **extra: str) -> dict[str, str]:
    """The environment of a stack a benchmark starts for itself: the checkpoints and device asked for,
    results under ``root``, and open and unlimited whatever this shell says, since its clients send
    ~100 requests a second from one address with no key (a rate limit would measure itself)."""
    return {
        **os.environ,
        "CHECKPOINT_DIR": str(args.checkpoint_dir),
        "RESULTS_DIR": str(root / "results"),
        "DEVICE": args.device,
        "PYTHONUNBUFFERED": "1",
        "API_KEYS": "",
        "RATE_LIMIT": "off",
        "RATE_LIMIT_READS": "off",
        **extra,
    }


def time_turns(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Each run, after one warm-up call, ``repeats`` times in turns (A B C A B C ...): a load that comes and
    goes on a shared machine falls on all alike. Seconds per call, by name."""
    for run in runs.values():  # warm-up: allocator, oneDNN primitives, lazy imports
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times
