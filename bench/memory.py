"""The memory section: the peak memory of the API and of the small-model worker for one large classify request.

It starts its own stack on free ports, as the service section does (a
``redis-server``, the small-model worker ``make run`` starts, and uvicorn as a
separate process: ``stack.services``), warms it with a one-image request, then sends
ONE ``POST /classify/target-domain`` of ``--memory-images`` PNGs of
``--memory-side`` x ``--memory-side`` pixels (real USPS test digits, enlarged:
flat areas, so they are small on the wire), and reads each process's peak
resident memory (``VmHWM`` in ``/proc/<pid>/status``) before and after.

The target is a peak below ``TARGET_MB`` for each process: the API decodes one
upload at a time straight to its 28x28 digit, and the worker reads only those.
The kernel's peak counts the shared libraries a process maps (torch alone is
hundreds of MB), so the private memory (``RssAnon``) is also sampled during the
request, and a process that only imports torch is measured beside.

The labels are checked against a second request of the 28x28 inputs the
replaced path made (each large PNG decoded whole, then resized), so a decode
that went wrong shows as disagreement, not as a fine memory number.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
from PIL import Image

from api.config import Settings
from contract.digits import DIGIT_SIZE
from contract.digits_io import digit_from_image
from contract.queues import QUEUE_SMALL
from stack.processes import RedisServer
from stack.services import LocalStack, WorkerSpec, worker_specs

from .common import stack_env
from .service import finished, usps_path

TARGET_MB = 500
WAIT = {"wait": 600}
DISTINCT = 16  # different digits among the uploads; the rest repeat them (each upload is decoded on its own)


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory")
    group.add_argument("--memory-images", type=int, default=256, help="PNG files in the one classify request")
    group.add_argument("--memory-side", type=int, default=4096, help="width and height of each PNG, in pixels")


def _digits(count: int, data_source: Path) -> tuple[list[np.ndarray], str]:
    """``count`` 16x16 grey digits: real USPS test digits when the data is there, else noise."""
    path = usps_path(data_source)
    if path.is_file():
        import h5py

        with h5py.File(path, "r") as data:
            rows = data["test"]["data"][:count]
        return [np.round(row.reshape(16, 16) * 255).astype(np.uint8) for row in rows], "USPS test digits"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(count)], "noise"


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", optimize=True)
    return out.getvalue()


def uploads(count: int, side: int, data_source: Path) -> tuple[list[bytes], list[bytes], str, int]:
    """The large RGB PNGs of the request (``count``, cycling over a few digits); for each, the 28x28 PNG the
    replaced path (decode it whole, RGB, bilinear resize) gave the model; and the largest difference, in levels
    of 255, between that and the digit the API now decodes."""
    digits, source = _digits(min(count, DISTINCT), data_source)
    large, small, worst = [], [], 0
    for digit in digits:
        data = _png(np.asarray(Image.fromarray(digit).convert("RGB").resize((side, side), Image.Resampling.NEAREST)))
        with Image.open(io.BytesIO(data)) as image:
            whole = image.convert("RGB").resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR, reducing_gap=None)
        with Image.open(io.BytesIO(data)) as image:
            now = digit_from_image(image)
        worst = max(worst, int(np.abs(now.astype(int) - np.asarray(whole).astype(int)).max()))
        large.append(data)
        small.append(_png(np.asarray(whole)))
    return [large[i % len(large)] for i in range(count)], [small[i % len(small)] for i in range(count)], source, worst


def _status(pid: int) -> dict[str, int]:
    """Memory counters of ``pid`` from /proc, in bytes: VmHWM (peak resident), VmRSS (resident now) and
    RssAnon (resident and private to the process: its heap, not the shared libraries it maps)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0]) * 1024  # reported in kB
    return fields


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a prefork worker does its jobs in children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(child) for child in (task / "children").read_text().split()]
    return found


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def memory(pid: int) -> dict[str, float]:
    """The largest peak, current and private resident memory over ``pid``'s process tree, in MB."""
    stats = [_status(p) for p in _tree(pid)]
    return {
        "peak_mb": _mb(max(s["VmHWM"] for s in stats)),
        "rss_mb": _mb(max(s["VmRSS"] for s in stats)),
        "anon_mb": _mb(max(s["RssAnon"] for s in stats)),
        "processes": len(stats),
    }


class AnonPeak:
    """The largest private resident memory (``RssAnon``) of some process trees, sampled every ``every_s``
    while the block runs: the kernel keeps a peak only of the total, shared libraries included."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.02) -> None:
        self.pids, self.every_s = pids, every_s
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                try:
                    anon = max(_status(p)["RssAnon"] for p in _tree(pid))
                except (OSError, ValueError):  # a child that ended between the listing and the read
                    continue
                self.peak[name] = max(self.peak[name], anon)
            self._stop.wait(self.every_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def torch_import_mb() -> float:
    """Resident memory of a Python process that has only imported torch (and torchvision, as the workers do)."""
    code = "import torch, torchvision; print(open('/proc/self/status').read())"
    status = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return _mb(int(hwm.split()[1]) * 1024)


def _classify(client: httpx.Client, pngs: list[bytes], prefix: str) -> dict[str, Any]:
    files = [("files", (f"{prefix}{k:04d}.png", data, "image/png")) for k, data in enumerate(pngs)]
    return finished(client, client.post("/classify/target-domain", params={"target": "usps", **WAIT}, files=files))


def _raised_limits(count: int, side: int, body: int) -> dict[str, str]:
    """The API's request limits, as environment variables, that this request would exceed by default."""
    defaults = Settings(_env_file=None)
    limits: dict[str, str] = {}
    # Multipart framing adds a few hundred bytes per file.
    if body + 1024 * count > defaults.max_body_bytes:
        limits["MAX_BODY_BYTES"] = str(body + 1024 * count)
    if count > defaults.max_files:
        limits["MAX_FILES"] = str(count)
    if side * side > defaults.max_image_pixels:
        limits["MAX_IMAGE_PIXELS"] = str(side * side)
    return limits


@dataclass
class Measured:
    """What the stack gave: each process's memory before and after the large request, the private peak
    sampled during it, its seconds, and the finished jobs of the large uploads and of their 28x28 reference."""

    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    private_peak: dict[str, int]
    seconds: float
    job: dict[str, Any]
    reference: dict[str, Any]


def _measure_on(stack: LocalStack, spec: WorkerSpec, large: list[bytes], small: list[bytes]) -> Measured:
    """Start the API and the small-model worker on ``stack``, warm them, and measure the large request."""
    worker = stack.start_worker(spec)
    base_url = stack.start_api()
    stack.wait_for_workers([QUEUE_SMALL])
    assert stack.api is not None
    with httpx.Client(base_url=base_url, timeout=900) as client:
        _classify(client, small[:1], "warm-up-")  # first-request imports and buffers
        before = {"api": memory(stack.api.pid), "worker": memory(worker.pid)}
        sent = time.perf_counter()
        with AnonPeak({"api": stack.api.pid, "worker": worker.pid}) as anon:
            job = _classify(client, large, "")
        seconds = time.perf_counter() - sent
        after = {"api": memory(stack.api.pid), "worker": memory(worker.pid)}
        reference = _classify(client, small, "small-")
    return Measured(before, after, anon.peak, seconds, job, reference)


def _print_logs(root: Path) -> None:
    for log in sorted(root.glob("logs/*.log")):
        print(f"--- {log.name} (last lines) ---\n{log.read_text(errors='replace')[-2000:]}")


def _measure(
    args: argparse.Namespace, spec: WorkerSpec, limits: dict[str, str], large: list[bytes], small: list[bytes]
) -> Measured:
    """The measurement on a stack of its own (redis-server, the worker, the API) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as redis_server:
            env = stack_env(
                args, root, MAX_WAIT_S=str(WAIT["wait"]), REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0", **limits
            )
            with LocalStack(env, log_dir=root / "logs", name_prefix="bench-memory-") as stack:
                try:
                    return _measure_on(stack, spec, large, small)
                except Exception:
                    _print_logs(root)
                    raise


def _labels(job: dict[str, Any]) -> list[int]:
    return [p["label"] for p in job["result"]["predictions"]]


def _process_row(measured: Measured, name: str) -> dict[str, Any]:
    before, after = measured.before[name], measured.after[name]
    return {
        "peak_before_mb": before["peak_mb"],
        "peak_after_mb": after["peak_mb"],
        "rss_before_mb": before["rss_mb"],
        "rss_after_mb": after["rss_mb"],
        "private_before_mb": before["anon_mb"],
        "private_peak_mb": _mb(measured.private_peak[name]),
        "processes": after["processes"],
        "below_target": after["peak_mb"] < TARGET_MB,
    }


def _print_summary(result: dict[str, Any], count: int, seconds: float, agree: int, worst: int) -> None:
    print(f"\n{'process':8s} {'peak before':>12s} {'peak after':>11s} {'rss after':>10s} {'private before':>15s} "
          f"{'private peak':>13s}   (MB; target: peak < {TARGET_MB})")
    for name in ("api", "worker"):
        row = result[name]
        print(f"{name:8s} {row['peak_before_mb']:12.1f} {row['peak_after_mb']:11.1f} {row['rss_after_mb']:10.1f} "
              f"{row['private_before_mb']:15.1f} {row['private_peak_mb']:13.1f}")
    print(f"one request of {count} images: {seconds:.1f} s; labels agree with the whole-image decode for "
          f"{agree}/{count} (28x28 inputs differ by at most {worst}/255); a process that only imports torch: "
          f"{result['torch_import_mb']} MB")


def run(args: argparse.Namespace) -> dict[str, Any]:
    count, side = args.memory_images, args.memory_side
    started = time.perf_counter()
    large, small, source, worst = uploads(count, side, args.data_source)
    body = sum(len(data) for data in large)
    print(f"  {count} PNGs of {side}x{side}: {body / 2**20:.1f} MiB on the wire "
          f"({time.perf_counter() - started:.1f} s to make)")
    limits = _raised_limits(count, side, body)
    if limits:
        print(f"  raised for this stack: {limits}")
    spec = next(s for s in worker_specs(torch_threads=args.threads) if s.queue == QUEUE_SMALL)
    result: dict[str, Any] = {
        "config": {
            "images": count,
            "side": side,
            "inputs": f"{source}, enlarged (nearest) to RGB",
            "body_mib": round(body / 2**20, 2),
            "max_abs_diff_vs_whole_decode": worst,  # levels of 255, of the 28x28 input
            "limits_raised": limits,
            "worker": {"pool": spec.pool, "concurrency": spec.concurrency, "torch_threads": spec.torch_threads},
            "target_mb": TARGET_MB,
        }
    }
    measured = _measure(args, spec, limits, large, small)
    agree = sum(a == b for a, b in zip(_labels(measured.job), _labels(measured.reference), strict=True))
    result["request"] = {"seconds": round(measured.seconds, 2), "labels_agree_with_whole_decode": f"{agree}/{count}"}
    result["torch_import_mb"] = torch_import_mb()
    for name in ("api", "worker"):
        result[name] = _process_row(measured, name)
    _print_summary(result, count, measured.seconds, agree, worst)
    return result
