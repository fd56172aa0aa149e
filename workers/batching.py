"""Micro-batching: concurrent small jobs of one worker share one forward pass.

Dynamic batching as Triton, BentoML and Ray Serve do it: requests for the same
model that arrive while the model is busy, or within a few milliseconds of each
other, are run as one batch, and each gets its own slice of the output back.
A DCGAN forward of 32 faces costs about 4 times one face on a CPU core (8 ms
for 1, 100 ms for 32), so under load most of a face request's compute is saved.

How it runs. The small-model worker uses Celery's ``threads`` pool: every job
runs in its own thread, builds its input (a face job draws its noise from its
own seed; a classify job decodes its uploads), then ``submit`` hands the input
to this process's single inference thread and blocks. That thread takes the
oldest waiting input, gathers the others for the same key (same model, same
kind of work) up to ``max_size`` rows, runs one call, and hands each job its
rows. The job thread then writes its own files and returns its own result, so
every request keeps its job id, its result in the Celery backend, its acks and
its failure: nothing Celery does per task changes.

When to flush. A batch is run when it is full, when its oldest input has
waited ``max_wait_s``, or at once when no other job of this process has
announced (``expecting``) that an input is on its way: a lone request does not
pay the wait (unless ``wait_alone``, which trades latency at low load for
larger batches). While a batch runs, new inputs queue up and go together next.

Why not ``celery-batches`` (the project's first choice, DESIGN.md):
- it pins ``celery<5.7`` (0.11, its latest release), and this project runs
  Celery 5.7: installing it would downgrade Celery or fail to resolve;
- it buffers *messages* in the consumer and flushes them on a repeating timer
  (``flush_interval``) or every ``flush_every`` messages, whether or not the
  pool is busy: with prefork and one child, every tick while a forward runs
  sends another small batch into the pool's queue instead of growing the next
  one (it does run under prefork, by pickling its ``SimpleRequest`` objects to
  the child; the batch size under load is just "arrivals per tick");
- a batch is one task call: the task must store each request's result itself
  (``backend.mark_as_done``), there is no STARTED state or time limit per
  request, and an exception leaves every request of the batch without a result.
Here batching sits below the task instead, so Celery's per-task machinery is
untouched, and a failing batch is retried request by request, so one bad input
fails alone.

Nothing here imports torch or Celery: the logic is tested with plain functions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
RunBatch = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One input's output, and the batch it ran in."""

    value: R
    requests: int  # inputs that shared the call
    rows: int  # rows (images) in the call
    waited_s: float  # from submit to the start of the call


@dataclass(eq=False)
class _Pending:
    key: Hashable
    item: Any
    run: RunBatch
    size: int
    max_size: int
    submitted: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Batched | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Runs submitted inputs in batches on one inference thread (see the module docstring)."""

    def __init__(
        self,
        max_wait_s: float,
        *,
        wait_alone: bool = False,
        name: str = "micro-batcher",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.max_wait_s = max_wait_s
        self.wait_alone = wait_alone
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._expected = 0
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # calls run, for logs and tests

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Say that this thread will ``submit`` soon, so a batch waits for it (up to ``max_wait_s``).

        Nested announcements of one thread count once; the announcement ends at
        the thread's next ``submit`` or when the outermost block is left.
        """
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        if depth == 0:
            local.announced = True
            with self._cond:
                self._expected += 1
        try:
            yield
        finally:
            local.depth -= 1
            if local.depth == 0 and local.announced:  # left without submitting
                local.announced = False
                with self._cond:
                    self._expected -= 1
                    self._cond.notify_all()

    def submit(
        self, key: Hashable, item: T, run: Callable[[Sequence[T]], Sequence[R]], *, size: int = 1, max_size: int = 1
    ) -> Batched[R]:
        """Run ``item`` in a batch of inputs with the same ``key``; blocks until its output is there.

        ``run`` maps a list of inputs to one output each, in order (inputs of one
        key share the ``run`` of the oldest). ``size`` is the input's rows; a batch
        stops growing at ``max_size`` rows, and an input larger than that runs alone.
        Exceptions of ``run`` are raised here, in the submitting thread.
        """
        pending = _Pending(key, item, run, max(size, 1), max(max_size, 1), self._clock())
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._pending.append(pending)
            if getattr(self._local, "announced", False):
                self._local.announced = False
                self._expected -= 1
            self._ensure_thread()
            self._cond.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self, timeout: float = 5.0) -> None:
        """Stop the inference thread once the queued inputs have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _take_batch(self) -> list[_Pending] | None:
        """The next batch, waiting for it to fill as the flush rules allow; None once closed and drained."""
        with self._cond:
            while True:
                while not self._pending:
                    if self._closed:
                        return None
                    self._cond.wait()
                first = self._pending[0]
                batch, rows, full = [], 0, False
                for pending in self._pending:
                    if pending.key != first.key:
                        continue
                    if batch and rows + pending.size > first.max_size:
                        full = True  # the next input would not fit: waiting cannot grow this batch
                        break
                    batch.append(pending)
                    rows += pending.size
                full = full or rows >= first.max_size
                left = first.submitted + self.max_wait_s - self._clock()
                nobody_coming = self._expected == 0 and not self.wait_alone
                if full or left <= 0 or nobody_coming or self._closed:
                    taken = set(map(id, batch))
                    self._pending = [p for p in self._pending if id(p) not in taken]
                    return batch
                self._cond.wait(left)

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        started = self._clock()
        rows = sum(p.size for p in batch)
        try:
            outputs = list(batch[0].run([p.item for p in batch]))
            if len(outputs) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} inputs gave {len(outputs)} outputs")
        except Exception as err:  # noqa: BLE001 - whatever the model raised belongs to the submitters
            if len(batch) > 1:
                # Whose input was it? Run each alone, so only that request fails.
                log.warning("%s: a batch of %d failed (%s); running its inputs one by one", self.name, len(batch), err)
                for pending in batch:
                    self._run([pending])
                return
            batch[0].error = err
            batch[0].done.set()
            return
        finally:
            self.batches += 1
        for pending, output in zip(batch, outputs, strict=True):
            pending.result = Batched(output, len(batch), rows, round(started - pending.submitted, 6))
            pending.done.set()
