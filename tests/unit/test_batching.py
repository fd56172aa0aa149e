"""The micro-batcher on plain functions: who shares a call, when it flushes, how failures stay apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from workers.batching import Batched, MicroBatcher


class Recorder:
    """A batch function that doubles its inputs and remembers every call."""

    def __init__(self, fail_on: object = None) -> None:
        self.calls: list[list[object]] = []
        self.fail_on = fail_on

    def __call__(self, items: Sequence[object]) -> list[object]:
        self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad input {self.fail_on!r}")
        return [2 * item for item in items]  # type: ignore[operator]


def run_together(batcher: MicroBatcher, jobs: list[tuple[str, int]], run: Recorder, **kw: int) -> list[Batched]:
    """Each job in its own thread; all announce first, then all submit (as concurrent Celery jobs would)."""
    barrier = threading.Barrier(len(jobs))
    results: list[Batched | None] = [None] * len(jobs)

    def job(index: int, key: str, item: int) -> None:
        with batcher.expecting():
            barrier.wait()
            results[index] = batcher.submit(key, item, run, **kw)

    threads = [threading.Thread(target=job, args=(i, key, item)) for i, (key, item) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.fixture
def batcher() -> MicroBatcher:
    # A long wait: batches below form because every announced job submits, never by timing luck.
    made = MicroBatcher(max_wait_s=5.0)
    yield made
    made.close()


def test_concurrent_inputs_share_one_call_and_each_gets_its_own_output(batcher: MicroBatcher) -> None:
    run = Recorder()
    results = run_together(batcher, [("faces:B", i) for i in range(6)], run, max_size=64)
    assert len(run.calls) == 1 and sorted(run.calls[0]) == list(range(6))
    assert [r.value for r in results] == [2 * i for i in range(6)]
    assert all(r.requests == 6 and r.rows == 6 for r in results)


def test_a_lone_input_does_not_wait() -> None:
    batcher = MicroBatcher(max_wait_s=10.0)
    started = time.monotonic()
    done = batcher.submit("k", 1, Recorder(), max_size=64)
    assert done.value == 2 and done.requests == 1
    assert time.monotonic() - started < 1.0  # nobody else announced: no reason to wait 10 s
    batcher.close()


def test_wait_alone_waits_for_company_even_when_nobody_announced() -> None:
    batcher = MicroBatcher(max_wait_s=0.05, wait_alone=True)
    started = time.monotonic()
    done = batcher.submit("k", 1, Recorder(), max_size=64)
    assert 0.04 <= time.monotonic() - started < 1.0 and done.waited_s >= 0.04
    batcher.close()


def test_the_wait_for_an_announced_input_is_bounded() -> None:
    batcher = MicroBatcher(max_wait_s=0.05)
    leave = threading.Event()

    def slow_job() -> None:  # announces, then takes its time
        with batcher.expecting():
            leave.wait(5)

    thread = threading.Thread(target=slow_job)
    thread.start()
    time.sleep(0.01)
    started = time.monotonic()
    done = batcher.submit("k", 1, Recorder(), max_size=64)
    assert 0.04 <= time.monotonic() - started < 1.0 and done.requests == 1
    leave.set()
    thread.join()
    batcher.close()


def test_nested_announcements_of_one_thread_count_once() -> None:
    batcher = MicroBatcher(max_wait_s=10.0)
    with batcher.expecting(), batcher.expecting():
        started = time.monotonic()
        batcher.submit("k", 1, Recorder(), max_size=64)
        assert time.monotonic() - started < 1.0  # its own announcement does not make it wait
    started = time.monotonic()
    batcher.submit("k", 2, Recorder(), max_size=64)
    assert time.monotonic() - started < 1.0  # and nothing is left announced
    batcher.close()


def test_leaving_without_submitting_releases_the_announcement() -> None:
    batcher = MicroBatcher(max_wait_s=10.0)
    with pytest.raises(RuntimeError), batcher.expecting():
        raise RuntimeError("the job failed before it had an input")
    started = time.monotonic()
    batcher.submit("k", 1, Recorder(), max_size=64)
    assert time.monotonic() - started < 1.0
    batcher.close()


def test_batches_stop_at_max_size_rows(batcher: MicroBatcher) -> None:
    run = Recorder()
    results = run_together(batcher, [("k", i) for i in range(5)], run, size=3, max_size=7)
    # 3 + 3 fits in 7 rows, a third input would not: batches of 2, 2 and 1 inputs.
    assert sorted(len(call) for call in run.calls) == [1, 2, 2]
    assert sorted(r.rows for r in results) == [3, 6, 6, 6, 6]


def test_an_input_larger_than_max_size_runs_alone(batcher: MicroBatcher) -> None:
    run = Recorder()
    done = batcher.submit("k", 1, run, size=100, max_size=8)
    assert done.value == 2 and run.calls == [[1]]


def test_inputs_of_other_keys_are_never_mixed(batcher: MicroBatcher) -> None:
    run = Recorder()
    jobs = [("faces:A", 1), ("faces:B", 2), ("faces:A", 3), ("classify:usps", 4), ("faces:B", 5)]
    results = run_together(batcher, jobs, run, max_size=64)
    assert sorted(sorted(call) for call in run.calls) == [[1, 3], [2, 5], [4]]
    assert [r.value for r in results] == [2, 4, 6, 8, 10]


def test_max_size_one_turns_batching_off(batcher: MicroBatcher) -> None:
    run = Recorder()
    results = run_together(batcher, [("k", i) for i in range(4)], run, max_size=1)
    assert len(run.calls) == 4 and all(r.requests == 1 for r in results)


def test_a_bad_input_fails_alone(batcher: MicroBatcher) -> None:
    run = Recorder(fail_on=13)
    outcomes: dict[int, object] = {}
    barrier = threading.Barrier(3)

    def job(item: int) -> None:
        with batcher.expecting():
            barrier.wait()
            try:
                outcomes[item] = batcher.submit("k", item, run, max_size=64).value
            except ValueError as err:
                outcomes[item] = err

    threads = [threading.Thread(target=job, args=(item,)) for item in (1, 13, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes[1] == 2 and outcomes[2] == 4
    assert isinstance(outcomes[13], ValueError) and "13" in str(outcomes[13])


def test_a_closed_batcher_refuses_inputs() -> None:
    batcher = MicroBatcher(max_wait_s=0.0)
    batcher.submit("k", 1, Recorder())
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("k", 2, Recorder())


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(max_wait_s=-1)
