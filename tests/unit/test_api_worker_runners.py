"""What the worker tasks do, without Celery: registry, runners and result files, on tiny untrained networks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.checkpoints import save_model
from models.dann import DANN
from models.dcgan import DCGANConfig, Generator
from models.scheduler import NoiseScheduleConfig
from models.unet import ConditionalUNet, UNetConfig
from workers import runners
from workers.config import WorkerSettings
from workers.protocol import INPUTS_DIR
from workers.registry import SERVED, ModelUnavailable, Registry
from workers.storage import JobFiles, prune_expired

JOB = "0" * 31 + "1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    directory = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    for variant in ("A", "B"):
        save_model(Generator(DCGANConfig(variant=variant, ngf=4)), directory, f"dcgan-{variant}", {})
    card = {"schedule": NoiseScheduleConfig(num_train_timesteps=10).to_dict(), "sampling": {"guidance_scale": 2.0}}
    save_model(ConditionalUNet(UNetConfig(base_channels=4, num_heads=1)), directory, "ddpm-digits", card)
    for target in ("svhn", "usps"):
        save_model(DANN(), directory, f"dann-{target}", {"metrics": {"acc": 0.5}})
    threads = torch.get_num_threads()
    # One thread: on a shared CPU, several processes' OpenMP pools spinning at once crawl.
    loaded = Registry(WorkerSettings(_env_file=None, checkpoint_dir=directory, device="cpu", torch_threads=1))
    loaded.load()
    yield loaded
    # Loading set these for the whole process; the other tests get theirs back.
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def test_registry_loads_every_served_model(registry: Registry) -> None:
    assert set(registry.models) == set(SERVED) and registry.missing == {}
    described = registry.describe()
    assert described["device"] == "cpu" and described["missing"] == []
    digits = next(m for m in described["models"] if m["role"] == "digits")
    assert digits["num_train_timesteps"] == 10 and digits["guidance_scale"] == 2.0
    assert digits["stored_dtype"] == "float16" and digits["dtype"] == "float32"


def test_a_worker_without_checkpoints_says_what_is_missing(tmp_path: Path) -> None:
    empty = Registry(WorkerSettings(_env_file=None, checkpoint_dir=tmp_path, device="cpu"))
    empty.load()
    assert empty.models == {} and set(empty.missing) == set(SERVED)
    with pytest.raises(ModelUnavailable, match="CHECKPOINT_DIR"):
        empty.get("faces:A")


def test_faces_are_written_with_a_grid(registry: Registry, tmp_path: Path) -> None:
    files = JobFiles(tmp_path, JOB)
    result = runners.generate_faces(registry.get("faces:B"), files, variant="B", n=3, seed=4)
    assert result["images"] == ["face_000.png", "face_001.png", "face_002.png"] and result["seed"] == 4
    for name in result["images"]:
        with Image.open(files.dir / name) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert not list(files.dir.glob(".*.tmp"))


def test_digits_follow_labels_report_progress_and_keep_frames(registry: Registry, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    result = runners.generate_digits(
        registry.get("digits"),
        JobFiles(tmp_path, JOB),
        labels=[1, 2],
        n=1,
        seed=0,
        sampler="ddpm",
        frames=True,
        progress=lambda step, total: seen.append((step, total)),
    )
    assert result["images"] == ["1_001.png", "2_001.png"]
    assert result["steps"] == 10 and result["guidance"] == 2.0  # the card's default
    assert seen == [(i, 10) for i in range(1, 11)]
    assert list(result["frames"]) == ["400", "320", "240", "160", "80", "0"]
    with Image.open(tmp_path / JOB / "grid.png") as grid:
        assert grid.size == (30 + 2, 2 * 30 + 2)  # a row per label


def test_ddim_defaults_to_25_steps_and_a_drawn_seed(registry: Registry, tmp_path: Path) -> None:
    model = registry.get("digits")
    with pytest.raises(ValueError, match="steps"):  # the model has only 10 timesteps
        runners.generate_digits(model, JobFiles(tmp_path, JOB), labels=[0], n=1, seed=None, sampler="ddim")
    result = runners.generate_digits(model, JobFiles(tmp_path, JOB), labels=[0], n=1, seed=None, steps=2, guidance=1.0)
    assert isinstance(result["seed"], int) and result["steps"] == 2 and result["guidance"] == 1.0


def test_classify_reads_the_stored_inputs(registry: Registry, tmp_path: Path) -> None:
    files = JobFiles(tmp_path, JOB)
    (files.dir / INPUTS_DIR).mkdir(parents=True)
    for i, size in enumerate((16, 32, 100)):
        Image.new("RGB", (size, size), (i * 50, 0, 0)).save(files.dir / INPUTS_DIR / f"{i:04d}.png")
    result = runners.classify_digits(
        registry.get("classify:usps"),
        files,
        target="usps",
        inputs=["0000.png", "0001.png", "0002.png"],
        names=["a", "b", "c"],
    )
    assert [p["image_name"] for p in result["predictions"]] == ["a", "b", "c"]
    assert all(len(p["probabilities"]) == 10 for p in result["predictions"])
    with pytest.raises(FileNotFoundError, match="RESULTS_DIR"):
        runners.classify_digits(registry.get("classify:usps"), files, target="usps", inputs=["9.png"], names=["x"])


def test_job_folders_are_named_by_job_id_only(tmp_path: Path) -> None:
    for bad in ("../etc", "ABC", "a" * 33, ""):
        with pytest.raises(ValueError):
            JobFiles(tmp_path, bad)


def test_prune_removes_expired_job_folders_only(tmp_path: Path) -> None:
    old, new, other = tmp_path / ("a" * 32), tmp_path / ("b" * 32), tmp_path / "keep-me"
    for folder in (old, new, other):
        folder.mkdir()
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert prune_expired(tmp_path, older_than_s=3600) == 1
    assert not old.exists() and new.exists() and other.exists()
