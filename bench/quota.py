"""The quota section: how far the results store goes past ``RESULTS_MAX_BYTES`` under a stream of large jobs.

It starts its own stack (a ``redis-server``, the small-model worker, uvicorn) with
``RESULTS_MAX_BYTES`` at ``--quota-mib``, sends ``--quota-jobs`` face jobs of
``--quota-n`` images from ``--quota-clients`` clients, and samples the bytes under
``RESULTS_DIR`` every ``SAMPLE_S`` while they run and until they have all finished.
It reports the largest sample against the quota (the target: at most 2x) and how
the jobs ended: each a worker trimmed away reads ``expired``, never ``succeeded``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from contract.queues import QUEUE_SMALL
from stack.processes import RedisServer
from stack.services import LocalStack, worker_specs

from .common import stack_env

SAMPLE_S = 0.05


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quota")
    group.add_argument("--quota-mib", type=float, default=5.0, help="RESULTS_MAX_BYTES, in MiB")
    group.add_argument("--quota-jobs", type=int, default=300, help="face jobs sent")
    group.add_argument("--quota-n", type=int, default=64, help="faces per job")
    group.add_argument("--quota-clients", type=int, default=8, help="concurrent clients")


def disk_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed by the quota meanwhile
                pass
    return total


class Sampler(threading.Thread):
    """The largest size of ``root`` seen, every ``SAMPLE_S``, until stopped."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.samples = root, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, disk_bytes(self.root))
            self.samples += 1
            self._halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()


async def _jobs(base_url: str, jobs: int, n: int, clients: int) -> Counter[str]:
    ends: Counter[str] = Counter()
    todo = iter(range(jobs))
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def one(seed: int) -> str:
            response = await client.post("/generate/faces", params={"n": n, "seed": seed, "wait": 60})
            if response.status_code not in (200, 202):
                return f"http {response.status_code}"
            job = response.json()
            while job["status"] in ("queued", "running"):
                job = (await client.get(f"/jobs/{job['id']}", params={"wait": 30})).json()
            return job["status"]

        async def loop() -> None:
            for seed in todo:
                ends[await one(seed)] += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
    return ends


def run(args: argparse.Namespace) -> dict[str, Any]:
    quota = int(args.quota_mib * 2**20)
    specs = [spec for spec in worker_specs(torch_threads=args.threads) if spec.queue == QUEUE_SMALL]
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as tmp:
        root = Path(tmp)
        results = root / "results"
        results.mkdir()
        with RedisServer(root / "redis") as redis_server:
            env = stack_env(
                args, root, REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0", RESULTS_MAX_BYTES=str(quota)
            )
            with LocalStack(env, log_dir=root / "logs", name_prefix="bench-quota-") as stack:
                for spec in specs:
                    stack.start_worker(spec)
                base_url = stack.start_api()
                stack.wait_for_workers()
                sampler = Sampler(results)
                sampler.start()
                started = time.perf_counter()
                try:
                    ends = asyncio.run(_jobs(base_url, args.quota_jobs, args.quota_n, args.quota_clients))
                finally:
                    sampler.stop()
                seconds = time.perf_counter() - started
                final = disk_bytes(results)
    result = {
        "config": {"quota_bytes": quota, "jobs": args.quota_jobs, "faces_n": args.quota_n,
                   "clients": args.quota_clients, "sample_s": SAMPLE_S},  # fmt: skip
        "seconds": round(seconds, 1),
        "peak_bytes": sampler.peak,
        "peak_over_quota": round(sampler.peak / quota, 2),
        "final_bytes": final,
        "samples": sampler.samples,
        "job_ends": dict(ends),
    }
    print(f"  {args.quota_jobs} face jobs of n={args.quota_n} against RESULTS_MAX_BYTES={quota}: peak "
          f"{sampler.peak} bytes on disk ({result['peak_over_quota']}x the quota, {sampler.samples} samples), "
          f"{final} at the end; jobs ended {dict(ends)} in {result['seconds']} s", flush=True)  # fmt: skip
    return result
