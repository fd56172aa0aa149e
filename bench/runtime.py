"""Digit inference runtimes on this machine: each CPU engine and precision against eager PyTorch, and the
distilled sampler against the guided one, for one UNet step, for 10 digits in this process and through the service.

1. **UNet step**: one forward pass of a guided 10-digit step (batch 20) by each engine this machine builds
   (``models.runtime``: torch, OpenVINO fp32 and, on a CPU with bf16 instructions, bf16, ONNX Runtime when
   installed), in turns, with the largest difference of its noise prediction from torch's;
2. **10 digits in process**: the guided default (the card's) and the distilled student, each run by each engine;
3. **through the service**: ``POST /generate/digits?label=3&n=10`` on two stacks started here and asked in turns:
   one served by eager PyTorch (``DIGIT_ENGINE=torch``) with the guided default named in the request, the way the
   service answered it before the runtimes and the student, and one as ``make run`` serves it now (its default
   sampler, the engine its worker picked). The ratio of their p50s is the speed-up a user sees.

Which engines and precisions may serve is decided elsewhere (bf16 only with an accepted measurement on the card);
this section times every one this CPU can run, so a reader sees what the decision leaves on the table.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from contract.digits import DISTILLED
from contract.queues import QUEUE_DIFFUSION
from contract.roles import DIGIT_CHECKPOINT
from models.loading import load_pipeline, student_name
from models.pipelines import DigitPipeline, count_nfe
from models.runtime import NoiseModel, build_engine, cpu_has_bf16, export_onnx
from models.runtime.choice import calibration_inputs
from models.scheduler import SamplingConfig
from stack.processes import RedisServer
from stack.services import LocalStack, worker_specs

from .common import percentiles, stack_env, time_turns
from .samplers import DIGITS

BASELINE = "torch fp32"


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--runtime-repeats", type=int, default=5, help="timed runs of each engine and configuration")
    group.add_argument("--runtime-requests", type=int, default=7, help="timed digit requests per stack")
    group.add_argument("--engine-cache-dir", type=Path, default=None, help="ONNX exports (default: a temporary one)")


def engines_for(net: torch.nn.Module, name: str, cache_dir: Path) -> dict[str, NoiseModel]:
    """Every engine and precision this machine builds for ``net``, by "<engine> <precision>"."""
    wanted = [("torch", "fp32"), ("openvino", "fp32"), ("onnxruntime", "fp32")]
    if cpu_has_bf16():
        wanted.append(("openvino", "bf16"))
    export = functools.partial(export_onnx, net, name, cache_dir)
    built: dict[str, NoiseModel] = {}
    for engine, precision in wanted:
        try:
            built[f"{engine} {precision}"] = build_engine(engine, precision, net, export)
        except Exception as err:  # not installed, or it does not compile here
            print(f"  {engine} {precision}: not measured ({type(err).__name__}: {err})")
    return built


def _rows(times: dict[str, list[float]], base: str, extra: dict[str, dict] | None = None) -> list[dict]:
    reference = statistics.median(times[base])
    return [{"name": name, "ms": round(1000 * statistics.median(ts), 1),
             "speedup": round(reference / statistics.median(ts), 2), **(extra or {}).get(name, {})}
            for name, ts in times.items()]


@torch.inference_mode()
def unet_step(pipe: DigitPipeline, engines: dict[str, NoiseModel], repeats: int) -> dict:
    inputs = calibration_inputs(pipe.unet, 20)
    reference = engines[BASELINE](*inputs)
    errors = {name: {"max_abs_diff": round((engine(*inputs) - reference).abs().max().item(), 6)}
              for name, engine in engines.items()}
    times = time_turns({name: functools.partial(engine, *inputs) for name, engine in engines.items()}, repeats)
    return {"what": "one UNet forward, batch 20 (a guided step of 10 digits)", "rows": _rows(times, BASELINE, errors)}


def ten_digits(pipe: DigitPipeline, card: dict, teacher: dict, student: dict, repeats: int) -> dict:
    """10 digits (one of each) by each configuration and engine, in turns; the baseline is eager torch guided."""
    guided = SamplingConfig.card_default(card)
    configs = {"guided": guided} | ({DISTILLED: SamplingConfig(DISTILLED)} if pipe.student is not None else {})

    def sample(config: SamplingConfig, engine: NoiseModel) -> Any:
        pipe.use_engine(engine, student=config.sampler == DISTILLED)
        return pipe(DIGITS, sampler=config.sampler, steps=config.steps, guidance_scale=config.guidance_scale,
                    guidance_interval=config.guidance_interval, generator=torch.Generator().manual_seed(0))

    runs, nfe = {}, {}
    for key, config in configs.items():
        engines = student if config.sampler == DISTILLED else teacher
        cost = count_nfe(config.sampler, config.steps, config.guidance_scale, config.guidance_interval, pipe.schedule)
        for name in engines:
            runs[f"{key} {name}"] = functools.partial(sample, config, engines[name])
            nfe[f"{key} {name}"] = {"nfe": cost}
    times = time_turns(runs, repeats)
    return {"configs": {k: c.to_dict() for k, c in configs.items()}, "rows": _rows(times, f"guided {BASELINE}", nfe)}


def _ask(client: httpx.Client, params: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.post("/generate/digits", params={**params, "wait": 300})
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text}")
    return time.perf_counter() - started, response.json()["result"]


def through_service(args: argparse.Namespace, card: dict) -> dict:
    """The same user request on an eager-torch stack (today's guided default, named) and the stack as shipped."""
    guided = SamplingConfig.card_default(card)
    old = {"label": 3, "n": 10, "sampler": guided.sampler, "steps": guided.steps, "guidance": guided.guidance_scale}
    new = {"label": 3, "n": 10}
    spec = next(s for s in worker_specs(torch_threads=args.threads) if s.queue == QUEUE_DIFFUSION)
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp, RedisServer(Path(tmp) / "redis") as redis:
        env = stack_env(args, Path(tmp), MAX_WAIT_S="300")
        url = f"redis://127.0.0.1:{redis.port}"
        eager = LocalStack({**env, "REDIS_URL": f"{url}/0", "DIGIT_ENGINE": "torch"}, log_dir=Path(tmp) / "eager")
        served = LocalStack({**env, "REDIS_URL": f"{url}/1"}, log_dir=Path(tmp) / "served")
        with eager, served:
            urls = {}
            for stack in (eager, served):
                stack.start_worker(spec)
                urls[stack] = stack.start_api()
                stack.wait_for_workers()
            cases = {"eager torch, guided default": (urls[eager], old), "as served": (urls[served], new)}
            return _alternate(cases, args.runtime_requests)


def _alternate(cases: dict[str, tuple[str, dict]], count: int) -> dict:
    clients = {name: httpx.Client(base_url=base, timeout=900) for name, (base, _) in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    results: dict[str, dict] = {}
    try:
        for i in range(count + 1):  # the first round warms up, not counted
            for name, (_, params) in cases.items():
                seconds, results[name] = _ask(clients[name], params)
                if i:
                    samples[name].append(seconds)
    finally:
        for client in clients.values():
            client.close()
    rows = {}
    for name, times in samples.items():
        p50, p95 = percentiles(times)
        result = results[name]
        rows[name] = {"p50_s": round(p50, 3), "p95_s": round(p95, 3), "samples": [round(t, 3) for t in times],
                      **{k: result.get(k) for k in ("sampler", "steps", "guidance", "nfe", "engine", "precision")}}
    base, new = (rows[name]["p50_s"] for name in cases)
    return {"request": "POST /generate/digits?label=3&n=10", "rows": rows,
            "p50_ratio_served_to_eager": round(new / base, 3)}


def run(args: argparse.Namespace) -> dict:
    if args.device != "cpu":
        raise SystemExit("the runtime section measures the CPU runtimes; run it with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the workers do
    pipe, card = load_pipeline(args.checkpoint_dir, DIGIT_CHECKPOINT)
    assert isinstance(pipe, DigitPipeline)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        cache = args.engine_cache_dir or Path(tmp)
        teacher = engines_for(pipe.unet, DIGIT_CHECKPOINT, cache)
        student = {} if pipe.student is None else engines_for(pipe.student, student_name(card) or "student", cache)
        result: dict[str, Any] = {"threads": torch.get_num_threads(), "cpu_has_bf16": cpu_has_bf16()}
        result["unet_step"] = unet_step(pipe, teacher, args.runtime_repeats)
        _print(result["unet_step"]["rows"])
        result["ten_digits_in_process"] = ten_digits(pipe, card, teacher, student, args.runtime_repeats)
        _print(result["ten_digits_in_process"]["rows"])
    result["service"] = through_service(args, card)
    for name, row in result["service"]["rows"].items():
        print(f"  {name:32s} p50 {row['p50_s']:.3f} s  ({row['sampler']}, {row['nfe']} NFE, "
              f"{row['engine']} {row['precision']})")
    print(f"  p50 as served / eager: {result['service']['p50_ratio_served_to_eager']}")
    return result


def _print(rows: list[dict]) -> None:
    for row in rows:
        print(f"  {row['name']:32s} {row['ms']:9.1f} ms  x{row['speedup']}")
