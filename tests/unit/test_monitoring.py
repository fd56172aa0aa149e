"""Task metrics: the Redis hash the workers write, read back as Prometheus families."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.config import Settings
from api.main import create_app
from api.operations.metrics import Snapshot, families
from contract import task_metrics
from contract.broker import queue_keys
from contract.queues import TASK_CLASSIFY, TASK_DIGITS, TASK_FACES
from contract.registration import ModelInfo, WorkerRegistration
from workers.tasks import model_label, task_label


def test_a_runtime_falls_in_the_smallest_bucket_that_holds_it() -> None:
    assert task_metrics.bucket_for(0.001) == "0.005"
    assert task_metrics.bucket_for(0.005) == "0.005"  # le: upper bounds are inclusive
    assert task_metrics.bucket_for(0.0051) == "0.01"
    assert task_metrics.bucket_for(7.0) == "10.0"
    assert task_metrics.bucket_for(10_000.0) == "+Inf"


def test_the_hash_parses_into_cumulative_series_and_skips_foreign_fields() -> None:
    raw = {
        b"runs|generate_faces|dcgan-B|succeeded": b"3",
        b"runs|generate_faces|dcgan-B|failed": b"1",
        b"bucket|generate_faces|dcgan-B|0.01": b"2",
        b"bucket|generate_faces|dcgan-B|1.0": b"1",
        b"bucket|generate_faces|dcgan-B|+Inf": b"1",
        b"sum|generate_faces|dcgan-B": b"2007.5",
        b"runs|generate_digits|ddpm-digits|succeeded": b"1",
        b"bucket|generate_digits|ddpm-digits|60.0": b"1",
        b"sum|generate_digits|ddpm-digits": b"42.0",
        b"some|other|field": b"x",
        b"bucket|generate_faces|dcgan-B|not-a-number": b"1",
    }
    faces, digits = sorted(task_metrics.parse(raw), key=lambda s: s.task, reverse=True)
    assert (faces.task, faces.model, faces.runs) == ("generate_faces", "dcgan-B", {"succeeded": 3, "failed": 1, "canceled": 0})
    assert faces.count == 4 and faces.sum_s == 2007.5
    cumulative = dict(faces.cumulative())
    assert cumulative["0.005"] == 0 and cumulative["0.01"] == 2 and cumulative["0.5"] == 2
    assert cumulative["1.0"] == 3 and cumulative["600.0"] == 3 and cumulative["+Inf"] == 4
    assert list(cumulative)[-1] == "+Inf"
    assert digits.runs["succeeded"] == 1 and dict(digits.cumulative())["30.0"] == 0


def test_families_render_in_the_exposition_format() -> None:
    now = datetime.now(UTC)
    worker = WorkerRegistration(
        worker="h:1", device="cpu", queues=["small"], started_at=now, heartbeat_at=now, missing=[],
        models=[ModelInfo(role="faces:B", name="dcgan-B", dtype="float32", device="cpu", warm=True),
                ModelInfo(role="faces:A", name="dcgan-A", dtype="float32", device="cpu", warm=False)],
    )  # fmt: skip
    series = task_metrics.parse({"runs|generate_faces|dcgan-B|succeeded": "2", "bucket|generate_faces|dcgan-B|0.05": "2",
                            "sum|generate_faces|dcgan-B": "0.06"})  # fmt: skip
    snapshot = Snapshot({"small": 3, "diffusion": 0}, [worker], series)

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(snapshot)

    registry = CollectorRegistry()
    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("genserve_queue_length", (("queue", "small"),))] == 3
    assert samples[("genserve_workers_up", (("queue", "small"),))] == 1
    assert samples[("genserve_workers_up", (("queue", "diffusion"),))] == 0  # present, so an alert can fire
    labels = (("model", "dcgan-B"), ("state", "succeeded"), ("task", "generate_faces"))
    assert samples[("genserve_tasks_total", labels)] == 2
    assert samples[("genserve_task_duration_seconds_bucket", (("le", "0.05"), ("model", "dcgan-B"), ("task", "generate_faces")))] == 2
    assert samples[("genserve_task_duration_seconds_count", (("model", "dcgan-B"), ("task", "generate_faces")))] == 2
    assert samples[("genserve_model_warm_workers", (("model", "dcgan-A"), ("role", "faces:A")))] == 0
    assert samples[("genserve_model_warm_workers", (("model", "dcgan-B"), ("role", "faces:B")))] == 1


def test_metrics_still_answer_without_redis(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, redis_url="redis://127.0.0.1:1/0", results_dir=tmp_path, checkpoint_dir=tmp_path,
        api_keys="", rate_limit="off", rate_limit_reads="off",
    )  # fmt: skip
    response = TestClient(create_app(settings)).get("/metrics")
    assert response.status_code == 200
    assert "genserve_redis_up 0.0" in response.text
    assert "genserve_queue_length" not in response.text


def test_a_queue_is_its_priority_lists() -> None:
    keys = queue_keys("small")
    assert keys[0] == "small" and len(keys) == 4 and all(key.startswith("small") for key in keys)


def test_task_and_model_labels_come_from_the_job() -> None:
    assert task_label(TASK_FACES) == "generate_faces"
    assert model_label(TASK_FACES, {"model": "A"}) == "dcgan-A"
    assert model_label(TASK_CLASSIFY, {"target": "usps"}) == "dann-usps"
    assert model_label(TASK_DIGITS, {"labels": [1]}) == "ddpm-digits"
    assert model_label(TASK_FACES, {"model": "Z"}) == "unknown"
