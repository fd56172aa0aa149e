"""What the worker tasks do, without Celery: registry, runners and result files, on tiny untrained networks."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.digits_io import digits_to_bytes
from contract.files import INPUTS_DIR, INPUTS_FILE
from contract.roles import SERVED
from contract.store import LocalStore
from models.checkpoints import save_model
from models.dann import DANN
from models.dcgan import DCGANConfig, Generator
from models.scheduler import NoiseScheduleConfig
from models.unet import ConditionalUNet, UNetConfig
from workers import runners
from workers.batching import MicroBatcher
from workers.config import WorkerSettings
from workers.registry import ModelUnavailable, Registry
from workers.storage import JobFiles

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
    settings = WorkerSettings(
        _env_file=None, checkpoint_dir=directory, device="cpu", torch_threads=1, engine_cache_dir=directory / "onnx"
    )
    loaded = Registry(settings)
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
    files = JobFiles(LocalStore(tmp_path), JOB)
    result = runners.generate_faces(registry.get("faces:B"), files, variant="B", n=3, seed=4)
    assert result["images"] == ["face_000.png", "face_001.png", "face_002.png"] and result["seed"] == 4
    for name in result["images"]:
        with Image.open(tmp_path / JOB / name) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert not list((tmp_path / JOB).glob(".*.tmp"))


def test_digits_follow_labels_report_progress_and_keep_frames(registry: Registry, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    result = runners.generate_digits(
        registry.get("digits"),
        JobFiles(LocalStore(tmp_path), JOB),
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
        runners.generate_digits(model, JobFiles(LocalStore(tmp_path), JOB), labels=[0], n=1, seed=None, sampler="ddim")
    result = runners.generate_digits(model, JobFiles(LocalStore(tmp_path), JOB), labels=[0], n=1, seed=None, steps=2, guidance=1.0)
    assert isinstance(result["seed"], int) and result["steps"] == 2 and result["guidance"] == 1.0


def test_classify_reads_the_stored_digits(registry: Registry, tmp_path: Path) -> None:
    files = JobFiles(LocalStore(tmp_path), JOB)
    digits = np.stack([np.full((28, 28, 3), (i * 50, 0, 0), np.uint8) for i in range(3)])
    files.store.put(JOB, f"{INPUTS_DIR}/{INPUTS_FILE}", digits_to_bytes(digits))
    stored = INPUTS_FILE
    result = runners.classify_digits(
        registry.get("classify:usps"), files, target="usps", inputs=stored, names=["a", "b", "c"]
    )
    assert [p["image_name"] for p in result["predictions"]] == ["a", "b", "c"]
    assert all(len(p["probabilities"]) == 10 for p in result["predictions"])
    # The worker classifies exactly the stored digits, scaled to [0, 1].
    expected = registry.get("classify:usps").pipeline(torch.from_numpy(digits).permute(0, 3, 1, 2) / 255.0)
    for row, probabilities in zip(result["predictions"], expected.probabilities.tolist(), strict=True):
        assert max(abs(p - q) for p, q in zip(row["probabilities"], probabilities)) < 1e-5
    with pytest.raises(ValueError, match="hold 3 digits"):
        runners.classify_digits(registry.get("classify:usps"), files, target="usps", inputs=stored, names=["x"])
    with pytest.raises(FileNotFoundError, match="RESULTS_STORE"):
        runners.classify_digits(registry.get("classify:usps"), files, target="usps", inputs="gone.npy", names=["x"])


def test_job_folders_are_named_by_job_id_only(tmp_path: Path) -> None:
    for bad in ("../etc", "ABC", "a" * 33, ""):
        with pytest.raises(ValueError):
            JobFiles(LocalStore(tmp_path), bad)


def test_a_worker_loads_only_the_models_of_its_queues(registry: Registry, tmp_path: Path) -> None:
    directory = registry.settings.checkpoint_dir
    small = Registry(WorkerSettings(_env_file=None, checkpoint_dir=directory, device="cpu", worker_queues="small"))
    small.load()
    assert set(small.models) == {"faces:A", "faces:B", "classify:svhn", "classify:usps"} and small.missing == {}
    assert small.describe()["queues"] == ["small"]
    with pytest.raises(ModelUnavailable, match="'diffusion'"):
        small.get("digits")
    # The queues a worker really consumes (its -Q) win over WORKER_QUEUES.
    diffusion = Registry(WorkerSettings(_env_file=None, checkpoint_dir=tmp_path, device="cpu"), queues=("diffusion",))
    diffusion.load()
    assert set(diffusion.missing) == {"digits"}  # nothing in tmp_path, and only the UNet was wanted
    with pytest.raises(ValueError, match="one of small, diffusion"):
        WorkerSettings(_env_file=None, worker_queues="small,gpu")


def _pixels(files: JobFiles, names: list[str]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(files.store.get(files.job_id, name))))) for name in names]).int()


def _concurrently(jobs: list, batcher: MicroBatcher) -> list[dict]:
    """Run ``jobs`` (callables taking the batcher) in threads that start together, as a threads-pool worker would."""
    barrier = threading.Barrier(len(jobs))
    results: list[dict] = [{}] * len(jobs)

    def run(index: int) -> None:
        with batcher.expecting():  # all announced before any submits: they must share a batch
            barrier.wait()
            results[index] = jobs[index](batcher)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_batched_faces_are_the_faces_of_each_seed_alone(registry: Registry, tmp_path: Path) -> None:
    model = registry.get("faces:B")
    seeds, sizes = [3, 4, 5, 6], [1, 2, 1, 3]
    alone = [
        runners.generate_faces(model, JobFiles(LocalStore(tmp_path / "alone"), f"{i:032x}"), variant="B", n=n, seed=seed)
        for i, (seed, n) in enumerate(zip(seeds, sizes))
    ]
    batcher = MicroBatcher(max_wait_s=2.0)
    jobs = [
        lambda b, i=i, seed=seed, n=n: runners.generate_faces(
            model, JobFiles(LocalStore(tmp_path / "batched"), f"{i:032x}"), variant="B", n=n, seed=seed, batcher=b, max_batch=64
        )
        for i, (seed, n) in enumerate(zip(seeds, sizes))
    ]
    batched = _concurrently(jobs, batcher)
    batcher.close()
    assert max(r["batch"]["requests"] for r in batched) > 1, batched  # they did share forward passes
    assert all(r["batch"] == {"requests": 1, "images": n} for r, n in zip(alone, sizes))
    for i, (one, many) in enumerate(zip(alone, batched)):
        assert one["images"] == many["images"] and one["seed"] == many["seed"]
        a = _pixels(JobFiles(LocalStore(tmp_path / "alone"), f"{i:032x}"), one["images"])
        b = _pixels(JobFiles(LocalStore(tmp_path / "batched"), f"{i:032x}"), many["images"])
        assert (a - b).abs().max() <= 1


def test_a_one_face_grid_is_the_face_itself(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import storage

    encodes = []
    monkeypatch.setattr(storage, "png_bytes", lambda image, real=storage.png_bytes: encodes.append(1) or real(image))
    files = JobFiles(LocalStore(tmp_path), JOB)
    runners.generate_faces(registry.get("faces:A"), files, variant="A", n=1, seed=1)
    assert files.store.get(JOB, "grid.png") == files.store.get(JOB, "face_000.png")
    assert len(encodes) == 1  # the grid is the face's PNG under a second name, not a second encode


def test_batched_classification_is_each_request_alone(registry: Registry, tmp_path: Path) -> None:
    model = registry.get("classify:svhn")
    generator = torch.Generator().manual_seed(0)
    counts = [1, 3, 2, 5]
    for i, count in enumerate(counts):
        pixels = (torch.rand(count, 28, 28, 3, generator=generator) * 255).to(torch.uint8).numpy()
        LocalStore(tmp_path).put(f"{i:032x}", f"{INPUTS_DIR}/{INPUTS_FILE}", digits_to_bytes(pixels))

    def job(i: int, batcher: MicroBatcher | None) -> dict:
        names = [f"{k}.png" for k in range(counts[i])]
        files = JobFiles(LocalStore(tmp_path), f"{i:032x}")
        return runners.classify_digits(
            model, files, target="svhn", inputs=INPUTS_FILE, names=names, batcher=batcher, max_batch=64, chunk=4
        )

    alone = [job(i, None) for i in range(len(counts))]
    batcher = MicroBatcher(max_wait_s=2.0)
    batched = _concurrently([lambda b, i=i: job(i, b) for i in range(len(counts))], batcher)
    batcher.close()
    assert max(r["batch"]["requests"] for r in batched) > 1
    for one, many in zip(alone, batched):
        assert [p["label"] for p in one["predictions"]] == [p["label"] for p in many["predictions"]]
        for p, q in zip(one["predictions"], many["predictions"]):
            assert max(abs(x - y) for x, y in zip(p["probabilities"], q["probabilities"])) < 1e-5
