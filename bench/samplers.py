"""Digit sampling on this machine: seconds per 10 digits for each sampler configuration,
and the UNet's CPU fast path measured one change at a time.

Configurations run in turns (A B C A B C ...), so a load that comes and goes
while the benchmark runs is shared among them instead of falling on one. The
accuracy and MS-SSIM next to each come from the model card's sweep (they are
measured by ``python -m training.evaluate digits-sweep``, not here).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from contract.roles import DIGIT_CHECKPOINT
from models.loading import load_pipeline
from models.pipelines import DigitPipeline, count_nfe
from models.scheduler import SamplingConfig

from .common import time_turns

DIGITS = list(range(10))  # "10 digits": one of each label, as a request without a label asks


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("samplers")
    group.add_argument("--sampler-repeats", type=int, default=3, help="timed runs of each configuration")
    group.add_argument("--with-ddpm", action="store_true", help="also time 400-step DDPM (minutes per run on a CPU)")
    group.add_argument(
        "--with-compile", action="store_true", help="also time torch.compile (minutes of compilation on a CPU)"
    )


def configurations(card: dict, with_ddpm: bool) -> dict[str, SamplingConfig]:
    default = SamplingConfig.card_default(card)
    configs = {
        "default": default,
        "ddim-25 g2": SamplingConfig("ddim", 25, 2.0),  # the default before the sampler sweep
        "unipc-10 g3": SamplingConfig("unipc", 10, 3.0),
        "dpmpp-2m-10 g3": SamplingConfig("dpmpp-2m", 10, 3.0),
    }
    if with_ddpm:
        configs["ddpm-400 g2"] = SamplingConfig("ddpm", None, 2.0)
    return configs


def _sweep_rows(card: dict) -> dict[str, dict]:
    """The card's sweep rows by configuration, the report seed's over the tuning seed's."""
    sweep = card.get("sampling", {}).get("sweep", {})
    rows: dict[str, dict] = {}
    for key in sorted(sweep, reverse=True):  # seed_1 first, then seed_0 overwrites
        for row in sweep[key].get("rows", []):
            config = SamplingConfig.from_dict(row)
            rows[repr(config)] = row | {"sweep_seed": sweep[key]["seed"]}
    return rows


def sampler_table(pipe: DigitPipeline, card: dict, args: argparse.Namespace) -> list[dict]:
    configs = configurations(card, args.with_ddpm)
    measured = _sweep_rows(card)

    def sample(config: SamplingConfig) -> Callable[[], object]:
        return lambda: pipe(
            DIGITS,
            sampler=config.sampler,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            guidance_interval=config.guidance_interval,
            generator=torch.Generator().manual_seed(0),
        )

    times = time_turns({name: sample(config) for name, config in configs.items()}, args.sampler_repeats)
    base = statistics.median(times["ddim-25 g2"])
    table = []
    for name, config in configs.items():
        row = measured.get(repr(config), {})
        seconds = statistics.median(times[name])
        table.append(
            {
                "name": name,
                **config.to_dict(),
                "nfe": count_nfe(
                    config.sampler, config.steps, config.guidance_scale, config.guidance_interval, pipe.schedule
                ),
                "s_per_10_digits": round(seconds, 3),
                "s_per_10_digits_all": [round(t, 3) for t in times[name]],
                "speedup_vs_ddim25": round(base / seconds, 2),
                "accuracy": row.get("accuracy"),
                "msssim": row.get("msssim"),
                "accuracy_seed": row.get("sweep_seed"),
                "accuracy_images_per_digit": row.get("images_per_digit"),
            }
        )
    return table


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Run = Callable[[], object]


def _no_grad(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> Run:
    def run() -> object:
        with torch.no_grad():
            return net(x, t, y)

    return run


def _inference(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> Run:
    def run() -> object:
        with torch.inference_mode():
            return net(x, t, y)

    return run


def _one_thread(run: Run) -> Run:
    def wrapped() -> object:
        with _threads(1):
            return run()

    return wrapped


def _bf16(run: Run) -> Run:
    def wrapped() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run()

    return wrapped


def _fast_path_runs(
    plain: torch.nn.Module, channels_last: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor
) -> dict[str, Run]:
    """The plain baseline and each change to it, by name; ``channels_last`` is the UNet with NHWC weights."""
    x_cl = x.contiguous(memory_format=torch.channels_last)
    return {
        "baseline (no_grad, NCHW, fp32)": _no_grad(plain, x, t, y),
        "inference_mode (served)": _inference(plain, x, t, y),
        "channels_last": _no_grad(channels_last, x_cl, t, y),
        "inference_mode + channels_last": _inference(channels_last, x_cl, t, y),
        "served, 1 thread": _one_thread(_inference(plain, x, t, y)),
        "served + bf16 autocast": _bf16(_inference(plain, x, t, y)),
    }


def _compiled(plain: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[Run, float]:
    """The served forward under torch.compile, and the seconds of its first call, which compiles it."""
    compiled = torch.compile(plain, dynamic=False)
    started = time.perf_counter()
    _inference(compiled, x, t, y)()
    compile_s = time.perf_counter() - started
    return _inference(compiled, x, t, y), compile_s


def _bf16_error(plain: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> float:
    """The largest change bf16 autocast makes to the served noise prediction."""
    with torch.inference_mode():
        reference = plain(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (plain(x, t, y).float() - reference).abs().max().item()


def _speed_rows(times: dict[str, list[float]], base: float) -> list[dict]:
    return [
        {
            "change": name,
            "ms": round(1000 * statistics.median(ts), 1),
            "speedup": round(base / statistics.median(ts), 2),
        }
        for name, ts in times.items()
    ]


def fast_path(checkpoint_dir: Path, args: argparse.Namespace) -> dict:
    """One UNet forward of a guided 10-digit step (batch 20), each change against the plain baseline."""
    pipe, _ = load_pipeline(checkpoint_dir, DIGIT_CHECKPOINT)
    plain = pipe.unet
    fast, _ = load_pipeline(checkpoint_dir, DIGIT_CHECKPOINT)
    fast.use_channels_last()
    x = torch.randn(20, 3, 28, 28)
    t = torch.full((20,), 200)
    y = torch.arange(20) % 10
    all_threads = torch.get_num_threads()
    runs = _fast_path_runs(plain, fast.unet, x, t, y)
    if args.with_compile:
        runs["served + torch.compile"], compile_s = _compiled(plain, x, t, y)
    times = time_turns(runs, max(3, args.sampler_repeats))
    base = statistics.median(times["baseline (no_grad, NCHW, fp32)"])
    bf16_error = _bf16_error(plain, x, t, y)
    result = {
        "what": "one UNet forward, batch 20 (a guided step of 10 digits)",
        "threads": all_threads,
        "bf16_cpu_support": torch.backends.mkldnn.is_available() and _cpu_has_bf16(),
        "bf16_max_abs_error_of_noise_prediction": round(bf16_error, 4),
        "rows": _speed_rows(times, base),
    }
    if args.with_compile:
        result["compile_s"] = round(compile_s, 1)
    return result


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run(args: argparse.Namespace) -> dict:
    if args.device != "cpu":
        raise SystemExit("the samplers section measures the CPU path; run it with --device cpu")
    checkpoint_dir = Path(args.checkpoint_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the workers do
    pipe, card = load_pipeline(checkpoint_dir, DIGIT_CHECKPOINT)
    assert isinstance(pipe, DigitPipeline)
    table = sampler_table(pipe, card, args)
    for row in table:
        acc = f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "  -  "
        print(
            f"{row['name']:16s} {row['sampler']:>12s}-{row['steps'] or 400:<3} NFE {row['nfe']:3d}  "
            f"{row['s_per_10_digits']:6.2f} s / 10 digits  x{row['speedup_vs_ddim25']:<5} vs ddim-25  accuracy {acc}"
        )
    speed = fast_path(checkpoint_dir, args)
    for row in speed["rows"]:
        print(f"  {row['change']:42s} {row['ms']:8.1f} ms  x{row['speedup']}")
    return {"device": "cpu", "threads": torch.get_num_threads(), "configurations": table, "cpu_fast_path": speed}
