"""Every served model does one forward pass at load; /readyz counts only models that did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from api.routes.health import SERVED_ROLES, models_check
from contract.registration import MissingModel, ModelInfo, WorkerRegistration
from contract.roles import SERVED
from models.checkpoints import save_model
from models.dann import DANN
from models.dcgan import DCGANConfig, Generator
from models.scheduler import NoiseScheduleConfig
from models.unet import ConditionalUNet, UNetConfig
from workers.config import WorkerSettings
from workers.registry import Registry


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for variant in ("A", "B"):
        save_model(Generator(DCGANConfig(variant=variant, ngf=4)), directory, f"dcgan-{variant}", {})
    card = {"schedule": NoiseScheduleConfig(num_train_timesteps=10).to_dict(), "sampling": {"guidance_scale": 2.0}}
    save_model(ConditionalUNet(UNetConfig(base_channels=4, num_heads=1)), directory, "ddpm-digits", card)
    for target in ("svhn", "usps"):
        save_model(DANN(), directory, f"dann-{target}", {})
    return directory


@pytest.fixture
def registry(checkpoints: Path) -> Iterator[Registry]:
    threads = torch.get_num_threads()
    settings = WorkerSettings(
        _env_file=None, checkpoint_dir=checkpoints, device="cpu", torch_threads=1, engine_cache_dir=checkpoints / "onnx"
    )
    loaded = Registry(settings)
    loaded.load()
    yield loaded
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def test_loaded_models_are_published_cold_then_each_warm_after_its_forward_pass(registry: Registry) -> None:
    assert set(registry.models) == set(SERVED)
    assert not any(m["warm"] for m in registry.describe()["models"])
    published: list[set[str]] = []
    registry.warm_up(on_warm=lambda: published.append({m["role"] for m in registry.describe()["models"] if m["warm"]}))
    assert len(published) == len(SERVED)  # one publication per model, as soon as it is warm
    assert [len(roles) for roles in published] == list(range(1, len(SERVED) + 1))
    assert all(m["warm"] for m in registry.describe()["models"]) and registry.missing == {}


def test_a_model_whose_forward_pass_fails_is_not_served(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: object) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(registry.models["faces:A"].pipeline.net, "forward", out_of_memory)  # type: ignore[union-attr]
    registry.warm_up()
    assert "faces:A" not in registry.models and "CUDA out of memory" in registry.missing["faces:A"]
    assert registry.missing["faces:A"].startswith("warm-up failed")
    assert all(model.warm for model in registry.models.values()) and len(registry.models) == len(SERVED) - 1


def _worker(warm: dict[str, bool], missing: dict[str, str] | None = None) -> WorkerRegistration:
    now = datetime.now(UTC)
    return WorkerRegistration(
        worker="h:1", device="cpu", queues=["small", "diffusion"], started_at=now, heartbeat_at=now,
        models=[ModelInfo(role=role, name=SERVED[role], dtype="float32", device="cpu", warm=w) for role, w in warm.items()],
        missing=[MissingModel(role=role, name=SERVED[role], reason=why) for role, why in (missing or {}).items()],
    )  # fmt: skip


def test_readiness_needs_every_model_warm_on_some_worker() -> None:
    all_warm = _worker(dict.fromkeys(SERVED_ROLES, True))
    assert models_check([all_warm]).ok
    cold = _worker({**dict.fromkeys(SERVED_ROLES, True), "faces:A": False, "digits": False})
    check = models_check([cold])
    assert not check.ok
    assert "not warm yet" in check.detail and "faces:A (dcgan-A)" in check.detail and "digits (ddpm-digits)" in check.detail
    assert "faces:B" not in check.detail
    # Warm on another live worker is enough.
    assert models_check([cold, _worker({"faces:A": True, "digits": True})]).ok


def test_readiness_names_models_not_loaded_and_not_warm_apart() -> None:
    roles = [role for role in SERVED_ROLES if role not in ("classify:usps", "faces:B")]
    worker = _worker({**dict.fromkeys(roles, True), "faces:B": False}, {"classify:usps": "FileNotFoundError: dann-usps.json"})
    check = models_check([worker])
    assert not check.ok
    assert "not loaded: dann-usps: FileNotFoundError: dann-usps.json" in check.detail
    assert "not warm yet" in check.detail and "faces:B (dcgan-B)" in check.detail


def test_a_worker_that_publishes_no_warm_flag_is_not_counted_warm() -> None:
    now = datetime.now(UTC).isoformat()
    worker = WorkerRegistration.model_validate(
        {"worker": "h:1", "device": "cpu", "started_at": now, "heartbeat_at": now, "missing": [],
         "models": [{"role": role, "name": SERVED[role], "dtype": "float32", "device": "cpu"} for role in SERVED_ROLES]}
    )  # fmt: skip
    assert not models_check([worker]).ok
