"""The load section: a mixed burst of requests at many concurrent clients, and whether every answer was right.

It starts its own stack as the service section does (a ``redis-server``, the
workers ``make run`` starts, uvicorn as a separate process; rate limits off,
since every client here is one address), then, at each concurrency
(``--load-clients``, default 32 and 128), sends ``--load-requests`` requests
(default 1,000) from that many clients in a closed loop: each client sends its
next request when the last one has answered. The requests are a fixed, seeded
mix of

- ``POST /generate/faces`` with n = 1..8,
- ``POST /classify/target-domain`` with 1-4 small digit PNGs (USPS test digits,
  else noise), and
- ``GET /jobs/{id}`` polls of jobs the burst already created,

the POSTs waiting at most ``--load-wait`` seconds (then a ``202``). It reports
the status codes and p50/p95 latency per kind, and afterwards polls every job a
``200``/``202`` accepted until it has finished: under load the service may
refuse (``429`` with ``Retry-After``, nothing created), but it must not fail a
request (any other status, a dropped connection) or lose or fail a job it
accepted. ``errors`` counts both; the target is 0.

The clients run in this process, on the same machine as the service: on a
small machine they take CPU from it, so the latencies are an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from contract.settings import REPO
from stack.processes import RedisServer
from stack.services import LocalStack, worker_specs

from .common import ms, percentiles, stack_env
from .service import digit_pngs, usps_path

KINDS = ("faces", "classify", "poll")
MIX = {"faces": 0.45, "classify": 0.35, "poll": 0.20}  # shares of the requests, by kind
SETTLE_WAIT_S = 30  # long-poll per GET while checking the accepted jobs afterwards
SETTLE_TIMEOUT_S = 600.0


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--load-requests", type=int, default=1000, help="requests per concurrency level")
    group.add_argument("--load-clients", default="32,128,256", help="concurrent clients, comma-separated")
    group.add_argument("--load-mix", choices=("mixed", "faces-n1"), default="mixed", help="the requests sent")
    group.add_argument(
        "--load-streams", type=int, default=256, help="event streams opened at once on one digit job (0: none)"
    )
    group.add_argument("--load-wait", type=float, default=10.0, help="`wait` of each POST, in seconds")
    group.add_argument("--load-seed", type=int, default=0, help="seed of the request mix")


@dataclass
class Outcome:
    kind: str
    status: int | str  # an HTTP status, or the name of the exception that stood for one
    latency_s: float
    retry_after: bool = False
    job: dict[str, Any] | None = None


@dataclass
class Plan:
    """The requests of one burst, drawn in advance so both concurrencies get the same mix."""

    kinds: list[str]
    faces_n: list[int]
    classify_files: list[int]
    poll_picks: list[float]  # which created job a poll reads, as a fraction of those created so far

    @classmethod
    def draw(cls, count: int, seed: int, mix: str = "mixed") -> Plan:
        """``mixed``: the seeded mix above; ``faces-n1``: faces of one image only, the crowd that exhausts
        connections fastest (the most requests per second, each a few Redis round trips)."""
        rng = random.Random(seed)
        if mix == "faces-n1":
            return cls(["faces"] * count, [1] * count, [1] * count, [0.0] * count)
        kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
        return cls(
            kinds,
            [rng.randint(1, 8) for _ in range(count)],
            [rng.randint(1, 4) for _ in range(count)],
            [rng.random() for _ in range(count)],
        )


@dataclass
class Burst:
    outcomes: list[Outcome] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # job ids, in the order their POSTs answered


async def _request(client: httpx.AsyncClient, plan: Plan, i: int, pngs: list[bytes], burst: Burst, wait: float) -> Outcome:
    kind = plan.kinds[i]
    if kind == "poll" and not burst.created:
        kind = "faces"  # nothing to poll yet
    started = time.perf_counter()
    try:
        if kind == "faces":
            response = await client.post("/generate/faces", params={"n": plan.faces_n[i], "seed": i, "wait": wait})
        elif kind == "classify":
            count = plan.classify_files[i]
            files = [("files", (f"{i}_{k}.png", pngs[(i + k) % len(pngs)], "image/png")) for k in range(count)]
            response = await client.post("/classify/target-domain", params={"target": "usps", "wait": wait}, files=files)
        else:
            job_id = burst.created[int(plan.poll_picks[i] * len(burst.created))]
            response = await client.get(f"/jobs/{job_id}")
    except httpx.HTTPError as err:
        return Outcome(kind, type(err).__name__, time.perf_counter() - started)
    outcome = Outcome(kind, response.status_code, time.perf_counter() - started, "retry-after" in response.headers)
    if response.status_code in (200, 202):
        outcome.job = response.json()
        if kind != "poll":
            burst.created.append(outcome.job["id"])
    return outcome


async def _burst(base_url: str, clients: int, plan: Plan, pngs: list[bytes], wait: float) -> tuple[Burst, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    burst = Burst()
    next_index = iter(range(len(plan.kinds)))
    async with httpx.AsyncClient(base_url=base_url, timeout=wait + 120, limits=limits) as client:

        async def loop() -> None:
            for i in next_index:  # shared: each client takes the next request of the plan
                burst.outcomes.append(await _request(client, plan, i, pngs, burst, wait))

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return burst, time.perf_counter() - started


async def _settle(base_url: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """Every job a POST accepted, polled until finished: how many succeeded, failed, or were never found."""
    jobs = {o.job["id"]: o.job for o in outcomes if o.kind != "poll" and o.job is not None}
    final: dict[str, str] = {}
    errors: list[str] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=SETTLE_WAIT_S + 60) as client:
        semaphore = asyncio.Semaphore(32)

        async def follow(job_id: str, job: dict[str, Any]) -> None:
            async with semaphore:
                while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                    response = await client.get(f"/jobs/{job_id}", params={"wait": SETTLE_WAIT_S})
                    if response.status_code != 200:
                        errors.append(f"GET /jobs/{job_id}: {response.status_code} {response.text[:200]}")
                        final[job_id] = f"http {response.status_code}"
                        return
                    job = response.json()
                final[job_id] = job["status"]
                if job["status"] == "failed":
                    errors.append(f"job {job_id} failed: {job.get('error')}")

        await asyncio.gather(*(follow(job_id, job) for job_id, job in jobs.items()))
    counts = Counter(final.values())
    return {
        "accepted": len(jobs),
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "unfinished": sum(n for status, n in counts.items() if status not in ("succeeded", "failed")),
        "errors": errors[:10],
    }


async def _streams(base_url: str, count: int) -> dict[str, Any]:
    """``count`` clients follow one digit job's events (``GET /jobs/{id}/events``) at once: how many streams
    ended with ``done``, and how the others ended."""
    limits = httpx.Limits(max_connections=count + 1, max_keepalive_connections=count + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60, read=120), limits=limits) as client:
        created = await client.post("/generate/digits", params={"label": 3, "n": 10, "wait": 0})
        created.raise_for_status()
        job_id = created.json()["id"]

        async def follow() -> str:
            try:
                async with client.stream("GET", f"/jobs/{job_id}/events") as response:
                    if response.status_code != 200:
                        return f"http {response.status_code}"
                    async for line in response.aiter_lines():
                        if line.strip() == "event: done":
                            return "done"
                    return "cut off without done"
            except httpx.HTTPError as err:
                return type(err).__name__

        started = time.perf_counter()
        ends = Counter(await asyncio.gather(*(follow() for _ in range(count))))
    return {"streams": count, "ended_with_done": ends.get("done", 0), "ends": dict(ends),
            "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip


def summarize(outcomes: list[Outcome], seconds: float, jobs: dict[str, Any]) -> dict[str, Any]:
    statuses: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    latency: dict[str, dict[str, float | None]] = {}
    for outcome in outcomes:
        statuses[outcome.kind][str(outcome.status)] += 1
    for kind in KINDS:
        p50, p95 = percentiles([o.latency_s for o in outcomes if o.kind == kind])
        latency[kind] = {"p50_ms": ms(p50), "p95_ms": ms(p95)}
    refused = sum(1 for o in outcomes if o.status == 429 and o.retry_after)
    bad = [o for o in outcomes if o.status not in (200, 202) and not (o.status == 429 and o.retry_after)]
    # A poll of an accepted job is 200; a POST is 200 (done within `wait`) or 202 (still running).
    errors = len(bad) + jobs["failed"] + jobs["unfinished"]
    return {
        "requests": len(outcomes),
        "seconds": round(seconds, 2),
        "rps": round(len(outcomes) / seconds, 1),
        "status_counts": {kind: dict(sorted(counts.items())) for kind, counts in statuses.items()},
        "latency": latency,
        "refused_429_with_retry_after": refused,
        "errors": errors,
        "jobs": jobs,
    }


def _print(clients: int, row: dict[str, Any]) -> None:
    print(f"  {clients} clients: {row['requests']} requests in {row['seconds']} s ({row['rps']} req/s)", flush=True)
    for kind in KINDS:
        lat = row["latency"][kind]
        if lat["p50_ms"] is None:
            continue
        print(f"    {kind:9s} {row['status_counts'][kind]}  p50 {lat['p50_ms']:8.1f} ms  p95 {lat['p95_ms']:8.1f} ms")
    jobs = row["jobs"]
    print(
        f"    jobs accepted {jobs['accepted']}, succeeded {jobs['succeeded']}, failed {jobs['failed']}, "
        f"unfinished {jobs['unfinished']}; 429 with Retry-After {row['refused_429_with_retry_after']}; "
        f"errors {row['errors']}",
        flush=True,
    )
    for line in jobs["errors"]:
        print(f"    ! {line}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(c) for c in str(args.load_clients).split(",") if c.strip()]
    pngs = digit_pngs(16, args.data_source)
    plan = Plan.draw(args.load_requests, args.load_seed, args.load_mix)
    specs = worker_specs(torch_threads=args.threads)
    result: dict[str, Any] = {
        "config": {
            "requests": args.load_requests,
            "clients": levels,
            "wait_s": args.load_wait,
            "seed": args.load_seed,
            "mix": MIX if args.load_mix == "mixed" else {"faces": 1.0},
            "faces_n": "1..8" if args.load_mix == "mixed" else "1",
            "classify_images": "1..4 " + ("USPS test digits" if usps_path(args.data_source).is_file() else "noise PNGs"),
            "device": args.device,
            "checkpoints": "shipped"
            if args.checkpoint_dir.resolve() == (REPO / "checkpoints").resolve()
            else "other",
        },
        "workers": {s.queue: {"pool": s.pool, "concurrency": s.concurrency, "torch_threads": s.torch_threads} for s in specs},
        "levels": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as redis_server:
            env = stack_env(args, root, REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0")
            with LocalStack(env, log_dir=root / "logs", name_prefix="bench-load-") as stack:
                try:
                    for spec in specs:
                        stack.start_worker(spec)
                    base_url = stack.start_api()
                    stack.wait_for_workers()
                    stack.wait_ready(60)
                    print(f"service up at {base_url}; {args.load_requests} requests per level:", flush=True)
                    for clients in levels:
                        burst, seconds = asyncio.run(_burst(base_url, clients, plan, pngs, args.load_wait))
                        jobs = asyncio.run(_settle(base_url, burst.outcomes))
                        row = result["levels"][str(clients)] = summarize(burst.outcomes, seconds, jobs)
                        _print(clients, row)
                    if args.load_streams:
                        streams = result["streams"] = asyncio.run(_streams(base_url, args.load_streams))
                        print(f"  {streams['streams']} event streams on one digit job: {streams['ended_with_done']} "
                              f"ended with done ({streams['ends']}) in {streams['seconds']} s", flush=True)  # fmt: skip
                except Exception:
                    for log in sorted(root.glob("logs/*.log")):
                        print(f"--- {log.name} (last lines) ---\n{log.read_text(errors='replace')[-2000:]}")
                    raise
    return result
