"""The diffusion UNet's CPU engines (models/runtime): the cached export, each engine against torch, the choice
of engine and precision (forced fallbacks included), and what the worker and the evaluation command make of it."""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from contract.jobs import JobKind, public_result
from contract.store import LocalStore
from models.checkpoints import read_card, save_model
from models.dcgan import DCGANConfig, Generator
from models.digit_classifier import DigitClassifier, DigitClassifierConfig
from models.loading import load_pipeline
from models.pipelines import DigitPipeline
from models.runtime import NoiseModel, TorchEngine, build_engine, choose_engine, export_onnx, hardware, weights_digest
from models.runtime.choice import calibration_inputs, plan
from models.scheduler import NoiseSchedule, NoiseScheduleConfig
from models.unet import ConditionalUNet, UNetConfig
from training.evaluate_runtime import engine_record
from workers import runners
from workers.config import WorkerSettings
from workers.registry import Registry
from workers.storage import JobFiles

RUNTIMES = ("openvino", "onnxruntime")
CHOICE_LOG = "models.runtime.choice"
KEY = "ddpm-digits"  # the checkpoint name exports are filed under


def _choose(unet: torch.nn.Module, engine: str, precision: str, card: dict, **kw: object) -> NoiseModel:
    return choose_engine(unet, engine, precision, card, checkpoint_key=KEY, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def flush_denormals() -> Iterator[None]:
    """As a worker runs (workers.registry): the tiny UNet's softmax makes subnormal floats, slow on x86."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def unet() -> ConditionalUNet:
    torch.manual_seed(0)
    return ConditionalUNet(UNetConfig(base_channels=8, num_heads=1)).eval()


@pytest.fixture(scope="module")
def onnx_path(unet: ConditionalUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(unet, KEY, tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A CPU that says it has bf16 instructions (whatever this one has)."""
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    yield


def _accepted_card(unet: torch.nn.Module, **record: object) -> dict:
    entry = {"accepted": True, "weights_sha256": weights_digest(unet), **record}
    return {"runtime": {"measured": {"openvino/bf16": entry}}}


def test_the_export_is_cached_reproducible_and_keyed_by_the_weights(
    unet: ConditionalUNet, onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = export_onnx(unet, KEY, tmp_path / "elsewhere")
    assert again.read_bytes() == onnx_path.read_bytes()  # the same weights export to the same bytes

    def no_export(*_: object, **__: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert export_onnx(unet, KEY, onnx_path.parent) == onnx_path  # found, not exported
    other = copy.deepcopy(unet)
    with torch.no_grad():
        other.outc.bias.add_(1.0)
    assert weights_digest(other) != weights_digest(unet)
    with pytest.raises(AssertionError, match="exported again"):
        export_onnx(other, KEY, tmp_path / "elsewhere")  # other weights: another file, so an export
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == [again.name]  # no temporary file left behind


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("name", ["torch", *RUNTIMES])
def test_each_engine_equals_torch_at_fp32(unet: ConditionalUNet, onnx_path: Path, name: str, batch: int) -> None:
    if name != "torch":
        pytest.importorskip(name)
    engine = build_engine(name, "fp32", unet, lambda: onnx_path)
    assert (engine.name, engine.precision) == (name, "fp32")
    x, t, labels = calibration_inputs(unet, batch)
    with torch.inference_mode():
        out, reference = engine(x, t, labels), unet(x, t, labels)
    assert out.dtype == torch.float32 and out.shape == (batch, 3, 28, 28)
    assert (out - reference).abs().max().item() < 1e-4


def test_the_pipeline_predicts_noise_through_its_engine(unet: ConditionalUNet, onnx_path: Path) -> None:
    pipe = DigitPipeline(unet, NoiseSchedule(NoiseScheduleConfig(num_train_timesteps=10)))
    assert pipe.noise_model is unet
    batches: list[int] = []

    class Counting(TorchEngine):
        def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            batches.append(x.shape[0])
            return super().__call__(x, t, labels)

    def draw() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return pipe([1, 2, 3], sampler="ddim", steps=2, guidance_scale=2.0, generator=generator).images

    eager = draw()
    assert pipe.use_engine(Counting(unet)) is pipe
    assert torch.equal(draw(), eager) and batches == [6, 6]  # guidance: the conditional and null rows in one call
    pytest.importorskip("openvino")
    pipe.use_engine(build_engine("openvino", "fp32", unet, lambda: onnx_path))
    assert (draw() - eager).abs().max().item() < 1e-4


def test_auto_falls_back_to_torch_when_no_runtime_imports(
    unet: ConditionalUNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in RUNTIMES:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with caplog.at_level(logging.INFO, logger=CHOICE_LOG):
        engine = _choose(unet, "auto", "auto", {}, cache_dir=tmp_path)
    assert (engine.name, engine.precision) == ("torch", "fp32")
    for name in RUNTIMES:
        assert any(f"{name} fp32 left out: ModuleNotFoundError" in r.message for r in caplog.records), caplog.text
    assert not any(tmp_path.iterdir())  # no runtime: nothing exported either


def test_a_named_runtime_that_fails_falls_back_to_torch(
    unet: ConditionalUNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("openvino")

    def broken_export(*_: object) -> Path:
        raise RuntimeError("boom")

    monkeypatch.setattr("models.runtime.choice.export_onnx", broken_export)
    with caplog.at_level(logging.INFO, logger=CHOICE_LOG):
        engine = _choose(unet, "openvino", "fp32", {}, cache_dir=tmp_path)
    assert engine.name == "torch"
    assert "openvino fp32 left out: RuntimeError: boom" in caplog.text
    assert "digit engine: torch fp32, since no openvino engine could be built" in caplog.text


def test_bf16_is_refused_on_a_cpu_without_bf16(
    unet: ConditionalUNet, onnx_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    card = _accepted_card(unet)
    candidates, _ = plan("auto", "auto", card, weights_digest(unet))
    assert all(precision == "fp32" for _, precision in candidates)
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger=CHOICE_LOG):
        engine = _choose(unet, "openvino", "bf16", card, cache_dir=onnx_path.parent)
    assert (engine.name, engine.precision) == ("openvino", "fp32")
    assert "DIGIT_PRECISION=bf16 refused (openvino: this CPU has no bf16 instructions" in caplog.text


@pytest.mark.usefixtures("bf16_cpu")
@pytest.mark.parametrize(
    "card, why",
    [
        ({}, "no accepted runtime.measured['openvino/bf16']"),
        ({"runtime": {"measured": {"openvino/bf16": {"accepted": False}}}}, "no accepted runtime.measured"),
        (_accepted_card(torch.nn.Linear(1, 1)), "measurement is of other weights"),
    ],
)
def test_bf16_needs_an_accepted_measurement_of_these_weights(
    unet: ConditionalUNet, onnx_path: Path, card: dict, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert plan("openvino", "auto", card, weights_digest(unet))[0] == [("openvino", "fp32")]
    assert plan("torch", "bf16", card, weights_digest(unet))[0] == [("torch", "fp32")]
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger=CHOICE_LOG):
        engine = _choose(unet, "openvino", "bf16", card, cache_dir=onnx_path.parent)
    assert (engine.name, engine.precision) == ("openvino", "fp32")
    assert why in caplog.text


@pytest.mark.usefixtures("bf16_cpu")
def test_bf16_runs_where_the_cpu_has_it_and_the_card_accepts_it(unet: ConditionalUNet, onnx_path: Path) -> None:
    card = _accepted_card(unet)
    candidates, notes = plan("auto", "auto", card, weights_digest(unet))
    assert ("openvino", "bf16") in candidates and ("torch", "fp32") in candidates and not notes
    assert plan("auto", "fp32", card, weights_digest(unet))[0] == [(e, "fp32") for e in ("torch", *RUNTIMES)]
    pytest.importorskip("openvino")
    engine = _choose(unet, "openvino", "bf16", card, cache_dir=onnx_path.parent)
    assert (engine.name, engine.precision) == ("openvino", "bf16")


def test_auto_picks_the_fastest_and_a_gpu_keeps_torch(
    unet: ConditionalUNet, onnx_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger=CHOICE_LOG):
        engine = _choose(unet, "auto", "fp32", {}, cache_dir=onnx_path.parent, batch=4)
    (line,) = [r.message for r in caplog.records if r.message.startswith("digit engine:")]
    assert line.startswith(f"digit engine: {engine.name} fp32, the fastest at batch 4 (torch fp32 ")
    assert "openvino fp32" in line
    on_meta = copy.deepcopy(unet).to("meta")  # any device but the CPU: torch, no export, no calibration
    assert _choose(on_meta, "openvino", "bf16", {}, cache_dir=tmp_path / "meta").name == "torch"
    assert not (tmp_path / "meta").exists()


def test_bf16_is_accepted_within_half_a_point_and_a_hundredth_of_msssim() -> None:
    engine = TorchEngine(torch.nn.Linear(1, 1))
    fp32 = {"accuracy": 0.97, "msssim": 0.12, "s_per_image": 0.1}

    def accepted(accuracy: float, msssim: float) -> bool:
        row = {**fp32, "accuracy": accuracy, "msssim": msssim, "label": "unipc-5 g5", "nfe": 9, "seed": 0,
               "images_per_digit": 100}  # fmt: skip
        return engine_record(row, fp32, engine, "sha", "cmd")["accepted"]

    assert accepted(0.965, 0.13) and accepted(0.975, 0.11)
    assert not accepted(0.964, 0.12) and not accepted(0.97, 0.131)


@pytest.mark.usefixtures("bf16_cpu")
def test_digits_engines_writes_the_records_that_let_a_worker_run_bf16(
    unet: ConditionalUNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command measures fp32 torch and OpenVINO bf16 with ``evaluate_digits.measure`` (replaced here by a
    stand-in: its accuracy and diversity need real digits) and writes what ``choose_engine`` then accepts."""
    pytest.importorskip("openvino")
    from training import evaluate_digits
    from training.evaluate import main

    measured: list[tuple[str, str, int, int]] = []

    def measure(pipe: DigitPipeline, clf: torch.nn.Module, config: object, **kw: object) -> dict:
        engine = pipe.noise_model
        measured.append((engine.name, engine.precision, kw["seed"], kw["per_digit"]))  # type: ignore[attr-defined]
        return {"label": "ddim-2 g2", "nfe": 4, "accuracy": 0.9, "msssim": 0.1, "s_per_image": 0.01,
                "seed": kw["seed"], "images_per_digit": kw["per_digit"]}  # fmt: skip

    monkeypatch.setattr(evaluate_digits, "measure", measure)
    monkeypatch.setattr(evaluate_digits, "real_reference", lambda *_: None, raising=False)
    card = {"schedule": NoiseScheduleConfig(num_train_timesteps=10).to_dict(),
            "sampling": {"default": {"sampler": "ddim", "steps": 2, "guidance_scale": 2.0}}}  # fmt: skip
    save_model(unet, tmp_path, "ddpm-digits", card)
    save_model(DigitClassifier(DigitClassifierConfig(width=4)), tmp_path, "digit-classifier", {})
    main(["digits-engines", "--checkpoint-dir", str(tmp_path), "--per-digit", "2", "--engine-cache-dir",
          str(tmp_path / "onnx")])  # fmt: skip
    assert measured == [("torch", "fp32", evaluate_digits.REPORT_SEED, 2), ("openvino", "bf16", 0, 2)]
    written = read_card(tmp_path, "ddpm-digits")
    record = written["runtime"]["measured"]["openvino/bf16"]
    loaded, _ = load_pipeline(tmp_path, "ddpm-digits")  # the weights as stored (fp16), which the record names
    assert record["accepted"] is True and record["weights_sha256"] == weights_digest(loaded.unet)  # type: ignore[union-attr]
    assert "digits-engines" in written["evaluation"]
    json.dumps(written)  # the card stays plain JSON
    engine = _choose(loaded.unet, "openvino", "auto", written, cache_dir=tmp_path / "onnx")  # type: ignore[union-attr]
    assert engine.name == "openvino"  # bf16 now allowed: the faster of fp32 and bf16 is chosen
    # Run again, the card already holds these weights' records: nothing is measured, unless asked.
    again = ["digits-engines", "--checkpoint-dir", str(tmp_path), "--per-digit", "2", "--engine-cache-dir",
             str(tmp_path / "onnx")]  # fmt: skip
    main(again)
    assert len(measured) == 2
    main([*again, "--remeasure"])
    assert len(measured) == 4


@pytest.mark.parametrize("setting", ["torch", "openvino"])
def test_the_worker_reports_its_engine_and_precision(tmp_path: Path, setting: str) -> None:
    if setting != "torch":
        pytest.importorskip(setting)
    torch.manual_seed(0)
    save_model(Generator(DCGANConfig(variant="A", ngf=4)), tmp_path, "dcgan-A", {})
    card = {"schedule": NoiseScheduleConfig(num_train_timesteps=10).to_dict(), "sampling": {"guidance_scale": 2.0}}
    save_model(ConditionalUNet(UNetConfig(base_channels=4, num_heads=1)), tmp_path, "ddpm-digits", card)
    settings = WorkerSettings(
        _env_file=None, checkpoint_dir=tmp_path, device="cpu", digit_engine=setting, digit_precision="fp32",
        engine_cache_dir=tmp_path / "onnx",
    )  # fmt: skip
    threads = torch.get_num_threads()
    registry = Registry(settings, queues=("small", "diffusion"))
    try:
        registry.load()
        registry.warm_up()
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    models = {m["role"]: m for m in registry.describe()["models"]}
    assert models["digits"]["warm"] and (models["digits"]["engine"], models["digits"]["precision"]) == (setting, "fp32")
    assert (models["faces:A"]["engine"], models["faces:A"]["precision"]) == ("torch", "fp32")
    result = runners.generate_digits(
        registry.models["digits"], JobFiles(LocalStore(tmp_path / "results"), "0" * 32), labels=[1], n=1, seed=0,
        sampler="ddim", steps=1,
    )  # fmt: skip
    assert (result["engine"], result["precision"]) == (setting, "fp32")
    public = public_result("0" * 32, JobKind.digits, json.loads(json.dumps(result)))
    assert (public.engine, public.precision) == (setting, "fp32")  # type: ignore[union-attr]
