"""Queues: one routing table for the API and the workers, and a worker per queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from api.errors import ModelUnavailable
from api.operations.live_workers import LiveWorkers
from contract import queues, roles
from contract.broker import api_celery
from contract.registration import ModelInfo, WorkerRegistration
from contract.roles import SERVED, served_for
from stack.services import WorkerSpec, worker_specs


def test_every_task_is_routed_to_a_known_queue() -> None:
    assert set(queues.TASK_QUEUES) == {queues.TASK_FACES, queues.TASK_DIGITS, queues.TASK_CLASSIFY}
    assert queues.TASK_QUEUES[queues.TASK_DIGITS] == queues.QUEUE_DIFFUSION
    assert queues.TASK_QUEUES[queues.TASK_FACES] == queues.TASK_QUEUES[queues.TASK_CLASSIFY] == "small"
    assert set(roles.ROLE_QUEUES) == set(SERVED) and set(roles.ROLE_QUEUES.values()) <= set(queues.QUEUES)


def test_the_api_publishes_by_the_workers_routes() -> None:
    from workers.celery_app import app as workers_app

    api = api_celery("redis://127.0.0.1:1/0", 60)
    try:
        assert api.conf.task_routes == workers_app.conf.task_routes == queues.task_routes()
        for task, queue in queues.TASK_QUEUES.items():
            published = api.amqp.router.route({}, task)["queue"]
            consumed = workers_app.amqp.queues[queue]
            # The same binding on both sides: queue, exchange and routing key all named after the queue.
            assert (published.name, published.exchange.name, published.routing_key) == (queue, queue, queue)
            assert (consumed.name, consumed.exchange.name, consumed.routing_key) == (queue, queue, queue)
    finally:
        api.close()


def test_models_are_split_by_queue() -> None:
    assert served_for(("diffusion",)) == {"digits": "ddpm-digits"}
    assert set(served_for(("small",))) == {"faces:A", "faces:B", "classify:svhn", "classify:usps"}
    assert served_for(queues.QUEUES) == SERVED


@pytest.mark.parametrize(
    "value, expected",
    [("small", ("small",)), (" diffusion , small ", ("diffusion", "small")), ("small,small", ("small",))],
)
def test_queue_lists_are_parsed(value: str, expected: tuple[str, ...]) -> None:
    assert queues.parse_queues(value) == expected


@pytest.mark.parametrize("value", ["", "celery", "small,gpu"])
def test_unknown_queues_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="small, diffusion"):
        queues.parse_queues(value)


def test_make_run_starts_a_worker_per_queue() -> None:
    specs = {spec.queue: spec for spec in worker_specs(cpus=16)}
    assert set(specs) == set(queues.QUEUES)
    diffusion, small = specs["diffusion"], specs["small"]
    assert (diffusion.pool, diffusion.concurrency, diffusion.torch_threads) == ("prefork", 1, None)  # every core
    assert small.pool == "threads" and small.concurrency >= 32 and small.torch_threads == 4
    assert worker_specs(cpus=2)[1].torch_threads == 1
    assert all(spec.torch_threads == 1 for spec in worker_specs(cpus=16, torch_threads=1))
    command = small.command(name="x@%h")
    assert command[command.index("-Q") + 1] == "small" and "--pool=threads" in command and "x@%h" in command
    assert WorkerSpec("small", "threads", 8, 2).env() == {
        "WORKER_QUEUES": "small", "TORCH_THREADS": "2", "EXIT_WITH_PARENT": "true"  # gone with the launcher
    }  # fmt: skip


def _worker(queues: list[str], roles: list[str]) -> WorkerRegistration:
    now = datetime.now(UTC)
    models = [ModelInfo(role=role, name=role, dtype="float32", device="cpu") for role in roles]
    return WorkerRegistration(
        worker="h:1", device="cpu", checkpoint_dir="/c", queues=queues, started_at=now, heartbeat_at=now,
        models=models, missing=[],
    )  # fmt: skip


class FakeRegistry(LiveWorkers):
    def __init__(self, workers: list[WorkerRegistration]) -> None:
        super().__init__(redis=None, cache_s=0)  # type: ignore[arg-type]
        self.workers = workers

    async def live(self) -> list[WorkerRegistration]:
        return self.workers


def test_a_job_queues_while_its_queue_has_no_worker_yet() -> None:
    only_small = FakeRegistry([_worker(["small"], ["faces:A", "faces:B"])])
    # The diffusion worker may still be loading: the digits job waits in its queue instead of a 503.
    assert asyncio.run(only_small.require("digits")) is None
    assert asyncio.run(only_small.require("faces:B")).role == "faces:B"  # type: ignore[union-attr]
    with pytest.raises(ModelUnavailable, match="classify:usps"):
        asyncio.run(only_small.require("classify:usps"))  # its worker is up, without that model
