"""Latency of a running service, per endpoint, for one client; and the same work in-process.

Starts nothing: point it at a running service (``python -m api.launcher``). It
sends a bounded number of sequential requests per endpoint (after one warm-up),
then runs the same model calls in this process through the pipelines, and prints
p50/p95 of each plus the ratio, which is what the service adds (HTTP, Redis,
the queue, PNG files). ``compute`` is the time the worker itself spent in the
model, from the job's result.

    python tests/bench_service.py --url http://localhost:8000 --requests 20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return statistics.median(ordered), p95


def timed(fn: Callable[[int], Any], count: int) -> tuple[list[float], list[Any]]:
    fn(-1)  # warm-up, not counted
    times, outputs = [], []
    for i in range(count):
        start = time.perf_counter()
        outputs.append(fn(i))
        times.append(time.perf_counter() - start)
    return times, outputs


def digit_pngs(count: int, data_source: Path) -> list[bytes]:
    """Real USPS test digits when the data is there, else noise of the same size."""
    path = data_source / "usps" / "usps.h5"
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


def bench_service(args: argparse.Namespace, pngs: list[bytes]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=args.url, timeout=900) as client:
        ready = client.get("/readyz")
        if ready.status_code != 200:
            raise SystemExit(f"the service is not ready: {ready.text}")
        wait = {"wait": 120}

        def faces(i: int) -> dict:
            return finished(client, client.post("/generate/faces", params={"n": args.faces_n, "seed": i + 1, **wait}))

        def faces_png(i: int) -> bytes:
            response = client.post(
                "/generate/faces", params={"n": args.faces_n, "seed": i + 1, **wait}, headers={"Accept": "image/png"}
            )
            if response.headers.get("content-type") != "image/png":
                raise RuntimeError(f"expected the grid PNG, got {response.status_code} {response.text[:200]}")
            return response.content

        def digits(i: int) -> dict:
            params = {"label": 3, "n": args.digits_n, "steps": args.digit_steps, "seed": i + 1, **wait}
            return finished(client, client.post("/generate/digits", params=params))

        files = [("files", (f"{k:04d}.png", data, "image/png")) for k, data in enumerate(pngs)]

        def classify(i: int) -> dict:
            return finished(
                client, client.post("/classify/target-domain", params={"target": "usps", **wait}, files=files)
            )

        for name, fn, count in (
            (f"POST /generate/faces n={args.faces_n}", faces, args.requests),
            (f"POST /generate/faces n={args.faces_n} (Accept: image/png)", faces_png, args.requests),
            (f"POST /generate/digits label=3 n={args.digits_n} ddim-{args.digit_steps}", digits, args.digit_requests),
            (f"POST /classify/target-domain {len(pngs)} images", classify, args.requests),
        ):
            times, outputs = timed(fn, count)
            computes = [o["result"]["compute_s"] for o in outputs if isinstance(o, dict)]
            rows[name] = {"samples": times, "compute": computes}
            print(f"  {name}: {len(times)} requests done", flush=True)

        job = faces(0)
        grid_url = job["result"]["grid"]["url"]
        for name, path in (
            ("GET /jobs/{id}", job["url"]),
            ("GET /jobs/{id}/images/grid.png", grid_url),
            ("GET /models", "/models"),
            ("GET /readyz", "/readyz"),
            ("GET /healthz", "/healthz"),
        ):
            times, _ = timed(lambda _i, p=path: client.get(p).raise_for_status(), args.requests)
            rows[name] = {"samples": times, "compute": []}
    return rows


def bench_in_process(args: argparse.Namespace, pngs: list[bytes]) -> dict[str, list[float]]:
    import torch

    from models.loading import DANN_MODELS, DIGIT_MODEL, FACE_MODELS, load_pipeline
    from models.pipelines import digits_from_pil

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the workers do
    device = torch.device(args.device)
    faces, _ = load_pipeline(args.checkpoint_dir, FACE_MODELS["B"], device=device)
    digits, card = load_pipeline(args.checkpoint_dir, DIGIT_MODEL, device=device)
    dann, _ = load_pipeline(args.checkpoint_dir, DANN_MODELS["usps"], device=device)
    guidance = float(card.get("sampling", {}).get("guidance_scale", 1.0))

    def gen(i: int) -> torch.Generator:
        return torch.Generator(device).manual_seed(i + 1)

    def classify(_: int) -> Any:
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in pngs]
        return dann(digits_from_pil(images).to(device)).labels  # type: ignore[operator]

    cases: dict[str, Callable[[int], Any]] = {
        f"POST /generate/faces n={args.faces_n}": lambda i: faces(args.faces_n, generator=gen(i)),  # type: ignore[call-arg]
        f"POST /generate/digits label=3 n={args.digits_n} ddim-{args.digit_steps}": lambda i: digits(  # type: ignore[call-arg]
            [3] * args.digits_n, sampler="ddim", steps=args.digit_steps, guidance_scale=guidance, generator=gen(i)
        ),
        f"POST /classify/target-domain {len(pngs)} images": classify,
    }
    counts = {name: args.digit_requests if "digits" in name else args.requests for name in cases}
    out = {}
    for name, fn in cases.items():
        out[name] = timed(fn, counts[name])[0]
        print(f"  in-process {name}: done", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8000", help="the running service")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per endpoint (after one warm-up)")
    parser.add_argument("--digit-requests", type=int, default=5, help="timed requests for the (slow) digits endpoint")
    parser.add_argument("--faces-n", type=int, default=32, help="faces per request")
    parser.add_argument("--digits-n", type=int, default=10, help="digits per request")
    parser.add_argument("--digit-steps", type=int, default=10, help="ddim steps per digits request")
    parser.add_argument("--classify-images", type=int, default=16, help="images per classification request")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=Path(os.environ.get("CHECKPOINT_DIR", REPO / "checkpoints"))
    )
    parser.add_argument(
        "--data-source", type=Path, default=Path(os.environ.get("DATA_SOURCE", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--device", default="cpu", help="device for the in-process runs (use the worker's)")
    parser.add_argument(
        "--threads", type=int, default=int(os.environ["TORCH_THREADS"]) if os.environ.get("TORCH_THREADS") else None
    )
    parser.add_argument("--no-in-process", action="store_true", help="only measure the service")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()

    pngs = digit_pngs(args.classify_images, args.data_source)
    print(f"service at {args.url}:", flush=True)
    service = bench_service(args, pngs)
    local = {} if args.no_in_process else (print("in-process:", flush=True), bench_in_process(args, pngs))[1]

    ms = 1000.0
    print(
        f"\n{'endpoint':62s} {'n':>3s} {'p50 ms':>9s} {'p95 ms':>9s} {'compute p50':>12s} {'in-proc p50':>12s} {'in-proc p95':>12s} {'p50 ratio':>9s}"
    )
    for name, row in service.items():
        p50, p95 = percentiles(row["samples"])
        compute = f"{statistics.median(row['compute']) * ms:12.1f}" if row["compute"] else f"{'':12s}"
        line = f"{name:62s} {len(row['samples']):3d} {p50 * ms:9.1f} {p95 * ms:9.1f} {compute}"
        if name in local:
            l50, l95 = percentiles(local[name])
            line += f" {l50 * ms:12.1f} {l95 * ms:12.1f} {p50 / l50:9.2f}"
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"service": service, "in_process": local}, indent=1))


if __name__ == "__main__":
    main()
