"""The service section: what HTTP, Redis, the queues and the PNG files add, and throughput under concurrency.

It starts its own stack on free ports (a ``redis-server``, the workers ``make run``
starts, one per queue, and uvicorn as a separate process: ``stack.services``), then:

1. **latency at one client**: sequential requests per endpoint (after a warm-up),
   p50/p95, beside the same model calls in this process (the pipelines alone,
   with the torch threads of the worker that serves them, run in turns with the
   requests), and their ratio; ``compute`` is the time the worker spent in the
   model, from the job's result;
2. **throughput** of faces (n=1) and classification at 1, 8 and 32 concurrent
   clients (closed loop: each client sends its next request when the last one
   has answered), with micro-batching and without: a second API and
   small-model worker run beside the first with ``MICRO_BATCH=false`` (on
   another Redis database), and the two are measured in alternating slices, so
   a load that comes and goes on a shared machine falls on both alike. The
   ratio is batched / unbatched.

The clients run in this process, on the same machine as the service: on a
small machine they take CPU from it, so the numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL
from contract.settings import REPO
from stack.processes import RedisServer
from stack.services import LocalStack, WorkerSpec, worker_specs

from .common import ms, percentiles, stack_env, timed

WAIT = {"wait": 120}
Call = Callable[[int], Any]


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("service")
    group.add_argument("--requests", type=int, default=15, help="timed sequential requests per endpoint at 1 client")
    group.add_argument("--digit-requests", type=int, default=2, help="timed requests for the (slow) digits endpoint")
    group.add_argument("--faces-n", type=int, default=32, help="faces per request in the latency part")
    group.add_argument("--digits-n", type=int, default=10, help="digits per request (of label 3, the served default sampler)")
    group.add_argument("--classify-images", type=int, default=16, help="images per classification request")
    group.add_argument("--clients", default="1,8,32", help="concurrent clients for the throughput part")
    group.add_argument(
        "--duration", type=float, default=4.0, help="seconds measured per throughput point, with and without batching"
    )
    group.add_argument("--slices", type=int, default=2, help="alternating slices the duration is cut into")
    group.add_argument("--warmup", type=float, default=0.75, help="seconds of load before each slice is measured")
    group.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 requests, 1 digit request, 1 s per throughput point"
    )
    group.add_argument("--no-in-process", action="store_true", help="skip the in-process comparison")
    group.add_argument("--no-throughput", action="store_true", help="skip the throughput part")
    group.add_argument("--ceiling-batch", type=int, default=32, help="requests per shared call in the ceiling part")
    group.add_argument("--ceiling-repeats", type=int, default=20, help="timed calls per case in the ceiling part")
    # --checkpoint-dir, --data-source, --device and --threads are common flags (bench.__main__).


def usps_path(data_source: Path) -> Path:
    return data_source / "usps" / "usps.h5"


def digit_pngs(count: int, data_source: Path) -> list[bytes]:
    """Real USPS test digits when the data is there, else noise of the same size."""
    path = usps_path(data_source)
    if path.is_file():
        import h5py

        with h5py.File(path, "r") as data:
            arrays = [np.round(row.reshape(16, 16) * 255).astype(np.uint8) for row in data["test"]["data"][:count]]
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(count)]
    out = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def finished(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    """The finished job of a POST, polling when it answered 202."""
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    job = response.json()
    while job["status"] not in ("succeeded", "failed"):
        job = client.get(job["url"], params={"wait": 30}).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} failed: {job['error']}")
    return job


# -- 1. latency at one client -------------------------------------------------------------------------------


def _cases(args: argparse.Namespace, pngs: list[bytes]) -> dict[str, dict[str, Any]]:
    """Endpoint name -> its request, and how many times to time it."""
    files = [("files", (f"{k:04d}.png", data, "image/png")) for k, data in enumerate(pngs)]
    digits = {"label": 3, "n": args.digits_n}  # the served default sampling configuration
    return {
        f"POST /generate/faces n={args.faces_n}": {"path": "/generate/faces", "params": {"n": args.faces_n}},
        f"POST /generate/faces n={args.faces_n} (Accept: image/png)": {
            "path": "/generate/faces",
            "params": {"n": args.faces_n},
            "headers": {"Accept": "image/png"},
        },
        "POST /generate/faces n=1": {"path": "/generate/faces", "params": {"n": 1}},
        f"POST /generate/digits label=3 n={args.digits_n} (default sampler)": {
            "path": "/generate/digits",
            "params": digits,
            "count": args.digit_requests,
        },
        f"POST /classify/target-domain {len(pngs)} images": {
            "path": "/classify/target-domain",
            "params": {"target": "usps"},
            "files": files,
        },
    }


def _service_calls(args: argparse.Namespace, client: httpx.Client, pngs: list[bytes]) -> dict[str, tuple[Call, int]]:
    """Endpoint name -> (one request, timed count)."""
    calls = {}
    for name, case in _cases(args, pngs).items():

        def call(i: int, case: dict = case) -> Any:
            seed = {} if "classify" in case["path"] else {"seed": i + 1 if i >= 0 else 10_000 - i}
            params = {**case["params"], **seed, **WAIT}
            response = client.post(case["path"], params=params, headers=case.get("headers"), files=case.get("files"))
            if case.get("headers"):  # the grid PNG itself
                if response.headers.get("content-type") != "image/png":
                    raise RuntimeError(f"expected the grid PNG, got {response.status_code} {response.text[:200]}")
                return None
            return finished(client, response)

        calls[name] = (call, case.get("count", args.requests))
    return calls


def _local_calls(
    args: argparse.Namespace, pngs: list[bytes], specs: dict[str, WorkerSpec]
) -> dict[str, tuple[Call, int]]:
    """Endpoint name -> (the same model call in this process, the torch threads of the worker that serves it)."""
    import torch

    from contract.digits_io import digit_from_image
    from contract.roles import DANN_CHECKPOINTS, DIGIT_CHECKPOINT, FACE_CHECKPOINTS
    from models.loading import load_pipeline
    from models.pipelines import digits_from_uint8
    from models.scheduler import SamplingConfig

    torch.set_flush_denormal(True)  # as the workers do
    device = torch.device(args.device)
    faces, _ = load_pipeline(args.checkpoint_dir, FACE_CHECKPOINTS["B"], device=device)
    digits, digit_card = load_pipeline(args.checkpoint_dir, DIGIT_CHECKPOINT, device=device)
    default = SamplingConfig.card_default(digit_card)
    dann, _ = load_pipeline(args.checkpoint_dir, DANN_CHECKPOINTS["usps"], device=device)

    def gen(i: int) -> torch.Generator:
        return torch.Generator(device).manual_seed(i + 1 if i >= 0 else 10_000 - i)

    def classify(_: int) -> Any:
        # The decode the API does, then the worker's model call.
        digits = np.stack([digit_from_image(Image.open(io.BytesIO(data))) for data in pngs])
        return dann(digits_from_uint8(digits).to(device)).labels  # type: ignore[operator]

    def draw_digits(i: int) -> Any:
        labels = [3] * args.digits_n
        return digits(  # type: ignore[call-arg]
            labels,
            sampler=default.sampler,
            steps=default.steps,
            guidance_scale=default.guidance_scale,
            guidance_interval=default.guidance_interval,
            generator=gen(i),
        )

    names = list(_cases(args, pngs))
    small = specs[QUEUE_SMALL].torch_threads or torch.get_num_threads()
    big = specs[QUEUE_DIFFUSION].torch_threads or torch.get_num_threads()
    return {
        names[0]: (lambda i: faces(args.faces_n, generator=gen(i)), small),  # type: ignore[call-arg]
        names[2]: (lambda i: faces(1, generator=gen(i)), small),  # type: ignore[call-arg]
        names[3]: (draw_digits, big),
        names[4]: (classify, small),
    }


def latency(
    args: argparse.Namespace, base_url: str, pngs: list[bytes], specs: dict[str, WorkerSpec]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Per endpoint, service requests and the same calls in-process, in turns (A B A B ...): a load that comes
    and goes on a shared machine falls on both alike. Returns the service rows and the in-process times."""
    rows: dict[str, dict[str, Any]] = {}
    local_times: dict[str, list[float]] = {}
    with httpx.Client(base_url=base_url, timeout=900) as client:
        local = {} if args.no_in_process else _local_calls(args, pngs, specs)
        if local:
            import torch

            threads = torch.get_num_threads()
        for name, (call, count) in _service_calls(args, client, pngs).items():
            pair = local.get(name)

            def in_process(i: int, pair: tuple[Call, int] | None = pair) -> float:
                assert pair is not None
                torch.set_num_threads(pair[1])
                started = time.perf_counter()
                pair[0](i)
                elapsed = time.perf_counter() - started
                torch.set_num_threads(threads)
                return elapsed

            call(-1)  # warm-up, not counted
            if pair:
                in_process(-1)
            times, computes, here = [], [], []
            for i in range(count):
                started = time.perf_counter()
                out = call(i)
                times.append(time.perf_counter() - started)
                if isinstance(out, dict):
                    computes.append(out["result"]["compute_s"])
                if pair:
                    here.append(in_process(i))
            rows[name] = {"samples": times, "compute": computes}
            if pair:
                local_times[name] = here
            print(f"  {name}: {count} requests" + (", and in-process" if pair else ""), flush=True)

        job = finished(client, client.post("/generate/faces", params={"n": args.faces_n, **WAIT}))
        for name, path in (
            ("GET /jobs/{id}", job["url"]),
            ("GET /jobs/{id}/images/grid.png", job["result"]["grid"]["url"]),
            ("GET /models", "/models"),
            ("GET /readyz", "/readyz"),
        ):
            times, _ = timed(lambda _i, p=path: client.get(p).raise_for_status(), args.requests)
            rows[name] = {"samples": times, "compute": []}
    return rows, local_times


def latency_table(service: dict[str, dict[str, Any]], local: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    table = {}
    print(
        f"\n{'endpoint (1 client)':58s} {'n':>3s} {'p50 ms':>8s} {'p95 ms':>8s} {'compute':>8s} "
        f"{'in-proc p50':>11s} {'in-proc p95':>11s} {'p50 ratio':>9s}"
    )
    for name, row in service.items():
        p50, p95 = percentiles(row["samples"])
        entry: dict[str, Any] = {"requests": len(row["samples"]), "p50_ms": ms(p50), "p95_ms": ms(p95)}
        line = f"{name:58s} {len(row['samples']):3d} {p50 * 1000:8.1f} {p95 * 1000:8.1f}"
        if row["compute"]:
            entry["compute_p50_ms"] = ms(statistics.median(row["compute"]))
            line += f" {entry['compute_p50_ms']:8.1f}"
        else:
            line += f" {'':8s}"
        if name in local:
            l50, l95 = percentiles(local[name])
            entry.update(in_process_p50_ms=ms(l50), in_process_p95_ms=ms(l95), ratio_p50=round(p50 / l50, 2))
            line += f" {l50 * 1000:11.1f} {l95 * 1000:11.1f} {p50 / l50:9.2f}"
        table[name] = entry
        print(line)
    return table


# -- the ceiling of micro-batching on this machine ------------------------------------------------------------


def batching_ceiling(args: argparse.Namespace, specs: dict[str, WorkerSpec], pngs: list[bytes]) -> dict[str, Any]:
    """What sharing one forward pass can save at most, here: the model call for one request alone against its
    share of a call for ``--ceiling-batch`` requests, in this process with the small worker's torch threads.

    If everything else a request costs (HTTP, Redis, Celery, PNG files, the clients) were free, micro-batching
    would multiply throughput by ``ceiling_ratio``; the measured batched/unbatched ratio stays below it.
    """
    import torch

    from contract.digits_io import digit_from_image
    from contract.roles import DANN_CHECKPOINTS, FACE_CHECKPOINTS
    from models.loading import load_pipeline
    from models.pipelines import digits_from_uint8

    device = torch.device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(specs[QUEUE_SMALL].torch_threads or threads)
    faces, _ = load_pipeline(args.checkpoint_dir, FACE_CHECKPOINTS["B"], device=device)
    dann, _ = load_pipeline(args.checkpoint_dir, DANN_CHECKPOINTS["usps"], device=device)
    digits = digits_from_uint8(np.stack([digit_from_image(Image.open(io.BytesIO(data))) for data in pngs])).to(device)
    batch = args.ceiling_batch
    calls = {
        "faces n=1": (lambda: faces(1), lambda: faces(batch)),  # type: ignore[call-arg]
        f"classify {len(pngs)} images": (lambda: dann(digits), lambda: dann(digits.repeat(batch, 1, 1, 1))),  # type: ignore[operator]
    }
    out: dict[str, Any] = {}
    try:
        for name, (alone, shared) in calls.items():
            alone(), shared()  # warm-up
            times: dict[str, list[float]] = {"alone": [], "shared": []}
            for _ in range(args.ceiling_repeats):  # in turns, so a passing load falls on both
                for key, fn in (("alone", alone), ("shared", shared)):
                    started = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - started)
            one = statistics.median(times["alone"])
            share = statistics.median(times["shared"]) / batch
            out[name] = {
                "requests_per_call": batch,
                "ms_alone": ms(one),
                "ms_per_request_shared": ms(share),
                "ceiling_ratio": round(one / share, 2),
            }
            print(
                f"  {name:20s} alone {one * 1000:7.2f} ms, share of a {batch}-request call "
                f"{share * 1000:7.2f} ms: ceiling {one / share:5.2f}x",
                flush=True,
            )
    finally:
        torch.set_num_threads(threads)
    return {"torch_threads": specs[QUEUE_SMALL].torch_threads or threads, "rows": out}


# -- 2. throughput under concurrency --------------------------------------------------------------------------

Send = Callable[[httpx.AsyncClient, int], Awaitable[dict[str, Any]]]


async def _closed_loop(base_url: str, send: Send, clients: int, duration: float, warmup: float) -> dict[str, Any]:
    """``clients`` loops of request-then-next for ``warmup + duration`` s.

    Counts the requests that completed within the last ``duration``; latencies
    are of the requests sent and completed within it.
    """
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + duration

        async def loop(k: int) -> None:
            i = 0
            while (sent := time.perf_counter()) < end:
                job = await send(client, k * 1_000_000 + i)
                done = time.perf_counter()
                if measure_from <= done <= end:
                    ids.append(job["id"])
                    if sent >= measure_from:
                        latencies.append(done - sent)
                i += 1

        await asyncio.gather(*(loop(k) for k in range(clients)))
    return {"seconds": duration, "latencies": latencies, "ids": ids}


def _point(slices: list[dict[str, Any]], redis_url: str) -> dict[str, Any]:
    """The slices of one mode at one concurrency, pooled."""
    ids = [job_id for part in slices for job_id in part["ids"]]
    p50, p95 = percentiles([lat for part in slices for lat in part["latencies"]])
    seconds = sum(part["seconds"] for part in slices)
    return {
        "rps": round(len(ids) / seconds, 1),
        "requests": len(ids),
        "p50_ms": ms(p50),
        "p95_ms": ms(p95),
        "mean_batch_requests": _mean_batch(redis_url, ids),
    }


def _senders(pngs: list[bytes]) -> dict[str, Send]:
    files = [("files", (f"{k:04d}.png", data, "image/png")) for k, data in enumerate(pngs)]

    async def check(response: httpx.Response) -> dict[str, Any]:
        job = response.json()
        if response.status_code != 200 or job.get("status") != "succeeded":
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
        return job

    async def faces(client: httpx.AsyncClient, seed: int) -> dict[str, Any]:
        return await check(await client.post("/generate/faces", params={"n": 1, "seed": seed, **WAIT}))

    async def classify(client: httpx.AsyncClient, _: int) -> dict[str, Any]:
        return await check(await client.post("/classify/target-domain", params={"target": "usps", **WAIT}, files=files))

    return {"faces n=1": faces, f"classify {len(pngs)} images": classify}


def _mean_batch(redis_url: str, ids: list[str]) -> float | None:
    """Mean number of requests per forward pass the measured jobs ran in (the workers store it in the result)."""
    import redis

    if not ids:
        return None
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.mget([f"celery-task-meta-{job_id}" for job_id in ids])
    finally:
        client.close()
    sizes = [json.loads(item)["result"]["batch"]["requests"] for item in raw if item]
    return round(statistics.mean(sizes), 2) if sizes else None


def _show(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7s}"


def throughput(args: argparse.Namespace, targets: dict[str, tuple[str, str]], pngs: list[bytes]) -> dict[str, Any]:
    """endpoint -> mode -> clients -> point; ``targets``: mode -> (API base URL, its Redis URL), measured in turns."""
    levels = [int(c) for c in str(args.clients).split(",") if c.strip()]
    slice_s = args.duration / max(args.slices, 1)
    out: dict[str, Any] = {}
    for name, send in _senders(pngs).items():
        out[name] = {mode: {} for mode in targets}
        for clients in levels:
            parts: dict[str, list[dict[str, Any]]] = {mode: [] for mode in targets}
            for _ in range(max(args.slices, 1)):
                for mode, (base_url, _redis) in targets.items():
                    parts[mode].append(asyncio.run(_closed_loop(base_url, send, clients, slice_s, args.warmup)))
            for mode, (_base, redis_url) in targets.items():
                point = out[name][mode][str(clients)] = _point(parts[mode], redis_url)
                print(
                    f"  {name:20s} {mode:9s} {clients:3d} clients: {point['rps']:7.1f} req/s, "
                    f"p50 {_show(point['p50_ms'])} ms, p95 {_show(point['p95_ms'])} ms, batch {point['mean_batch_requests']}",
                    flush=True,
                )
    return out


def throughput_table(measured: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    batched = {name: modes["batched"] for name, modes in measured.items()}
    unbatched = {name: modes["unbatched"] for name, modes in measured.items()}
    print(
        f"\n{'throughput (req/s)':22s} {'clients':>7s} {'batched':>9s} {'unbatched':>9s} {'ratio':>6s} {'vs 1 client':>11s}"
    )
    for name, points in batched.items():
        ratios = {}
        for clients, point in points.items():
            other = unbatched.get(name, {}).get(clients)
            ratio = round(point["rps"] / other["rps"], 2) if other and other["rps"] else None
            ratios[clients] = ratio
            scale = point["rps"] / points[min(points, key=int)]["rps"] if points[min(points, key=int)]["rps"] else 0
            print(
                f"{name:22s} {clients:>7s} {point['rps']:9.1f} {other['rps'] if other else float('nan'):9.1f} "
                f"{ratio if ratio is not None else float('nan'):6.2f} {scale:11.2f}"
            )
        first = points[min(points, key=int)]["rps"]
        table[name] = {
            "batched": points,
            "unbatched": unbatched.get(name, {}),
            "ratio_batched_over_unbatched": ratios,
            "batched_over_1_client": {c: round(p["rps"] / first, 2) if first else None for c, p in points.items()},
        }
    return table


# -- the section ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.requests, args.digit_requests, args.duration, args.slices, args.warmup = 3, 1, 1.0, 1, 0.5
        args.ceiling_repeats = 3
    pngs = digit_pngs(args.classify_images, args.data_source)
    specs = {spec.queue: spec for spec in worker_specs(torch_threads=args.threads)}
    config = {key: value for key, value in vars(args).items() if not isinstance(value, Path) and key != "sections"}
    # Where the checkpoints and data live on this machine stays out of the (committed) JSON; what they were does not.
    config["checkpoints"] = "shipped" if args.checkpoint_dir.resolve() == (REPO / "checkpoints").resolve() else "other"
    config["classify_inputs"] = "USPS test digits" if usps_path(args.data_source).is_file() else "noise"
    result: dict[str, Any] = {
        "config": config,
        "workers": {
            queue: {"pool": s.pool, "concurrency": s.concurrency, "torch_threads": s.torch_threads}
            for queue, s in specs.items()
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as redis_server:
            env = stack_env(args, root, MAX_WAIT_S="300")
            url = {db: f"redis://127.0.0.1:{redis_server.port}/{db}" for db in (0, 1)}
            # The service as `make run` starts it, and beside it an API and a small-model worker without batching.
            stack = LocalStack({**env, "REDIS_URL": url[0]}, log_dir=root / "logs", name_prefix="bench-")
            plain = LocalStack(
                {**env, "REDIS_URL": url[1], "MICRO_BATCH": "false"},
                log_dir=root / "logs-unbatched",
                name_prefix="plain-",
            )
            with stack, plain:
                try:
                    for spec in specs.values():
                        stack.start_worker(spec)
                    if not args.no_throughput:
                        plain.start_worker(specs[QUEUE_SMALL])
                    base_url = stack.start_api()
                    stack.wait_for_workers()
                    stack.wait_ready(60)
                    print(f"service up at {base_url}; latency at 1 client:", flush=True)
                    result["latency"] = latency_table(*latency(args, base_url, pngs, specs))
                    if not args.no_throughput:
                        plain_url = plain.start_api()
                        plain.wait_for_workers()
                        print(
                            "\nthroughput, with and without micro-batching (MICRO_BATCH=false), in turns:", flush=True
                        )
                        targets = {"batched": (base_url, url[0]), "unbatched": (plain_url, url[1])}
                        result["throughput"] = throughput_table(throughput(args, targets, pngs))
                        print("\nthe most micro-batching can gain here (model calls alone, in this process):")
                        result["batching_ceiling"] = batching_ceiling(args, specs, pngs)
                except Exception:
                    for log in sorted(root.glob("logs*/*.log")):
                        print(f"--- {log.name} (last lines) ---\n{log.read_text(errors='replace')[-2000:]}")
                    raise
    return result
